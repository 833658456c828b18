"""Snakemake script: one component's size-vs-quality plot from the quantization summary (see kiln.workflow.jobs)."""
from kiln.config import build_config
from kiln.workflow import jobs, logs

logs.run_job(snakemake.log[0], jobs.quantization_plot_job, build_config(snakemake.config),
             snakemake.wildcards.model, snakemake.wildcards.component, snakemake.input.summary,
             snakemake.output.plot)
