"""Glue between config.yaml and the Snakemake DAG: targets, stamps, job records. No Snakemake import."""
