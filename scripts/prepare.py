"""Snakemake script: load a model's source once and trace its components (see kiln.workflow.jobs.prepare_job)."""
from kiln.config import build_config
from kiln.workflow import jobs, logs

logs.run_job(snakemake.log[0], jobs.prepare_job, build_config(snakemake.config), snakemake.params.model,
             snakemake.input.source, dict(snakemake.params.programs), snakemake.output.facts,
             snakemake.output.record)
