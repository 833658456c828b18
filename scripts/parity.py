"""Snakemake script: validate one component (see kiln.workflow.jobs.parity_job)."""
from kiln.config import build_config
from kiln.workflow import jobs, logs

logs.run_job(snakemake.log[0], jobs.parity_job, build_config(snakemake.config), snakemake.wildcards.model,
             snakemake.wildcards.component, snakemake.input.facts, snakemake.input.reference,
             snakemake.input.package, snakemake.output.record, snakemake.params.plots_dir)
