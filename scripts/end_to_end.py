"""Snakemake script: the cross-component task through the packages (see kiln.workflow.jobs.end_to_end_job)."""
from kiln.config import build_config
from kiln.workflow import jobs, logs

logs.run_job(snakemake.log[0], jobs.end_to_end_job, build_config(snakemake.config), snakemake.wildcards.model,
             snakemake.input.facts, snakemake.input.task, dict(snakemake.params.packages),
             snakemake.output.record, snakemake.params.plots_dir, mem_mb=snakemake.resources.mem_mb)
