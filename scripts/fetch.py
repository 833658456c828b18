"""Snakemake script: fetch a model's source (see kiln.workflow.jobs.fetch_job)."""
from kiln.config import build_config
from kiln.workflow import jobs, logs

logs.run_job(snakemake.log[0], jobs.fetch_job, build_config(snakemake.config), snakemake.wildcards.model,
             snakemake.output.record, snakemake.params.checkpoint_dir, mem_mb=snakemake.resources.mem_mb)
