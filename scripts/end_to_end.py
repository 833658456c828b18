"""Snakemake script: a model's cross-component task check (see kiln.workflow.jobs.end_to_end_job)."""
from kiln.config import build_config
from kiln.workflow import jobs, logs

logs.run_job(snakemake.log[0], jobs.end_to_end_job, build_config(snakemake.config), snakemake.wildcards.model,
             snakemake.input.source, list(snakemake.input.packages), snakemake.output.record,
             mem_mb=snakemake.resources.mem_mb)
