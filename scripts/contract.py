"""Snakemake script: check a built model against its consumer's contract (kiln.workflow.jobs.contract_job)."""
from kiln.config import build_config
from kiln.workflow import jobs, logs

logs.run_job(snakemake.log[0], jobs.contract_job, build_config(snakemake.config), snakemake.wildcards.model,
             snakemake.input.contract, snakemake.input.facts, snakemake.input.source,
             dict(snakemake.params.packages), dict(snakemake.params.bundles), snakemake.output.report)
