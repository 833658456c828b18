"""End-to-end scenarios: the workflow run as a user runs it (separate Snakemake, DVC, kiln processes in
fresh workspaces), slow."""
