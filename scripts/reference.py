"""Snakemake script: validation inputs and torch outputs of a model, once (see kiln.workflow.jobs.reference_job)."""
from kiln.config import build_config
from kiln.workflow import jobs, logs

logs.run_job(snakemake.log[0], jobs.reference_job, build_config(snakemake.config), snakemake.params.model,
             snakemake.input.facts, dict(snakemake.params.programs), dict(snakemake.params.references),
             snakemake.output.task, snakemake.output.torch_latency)
