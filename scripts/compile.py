"""Snakemake script: compile one package (see kiln.workflow.jobs.compile_job)."""
from kiln.config import build_config
from kiln.workflow import jobs, logs

logs.run_job(snakemake.log[0], jobs.compile_job, build_config(snakemake.config), snakemake.wildcards.model,
             snakemake.wildcards.component, snakemake.input.package, snakemake.input.reference,
             snakemake.output.bundle, snakemake.output.record)
