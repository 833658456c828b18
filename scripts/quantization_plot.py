"""Snakemake script: one component's size-vs-quality plot from the quantization summary (kiln.workflow.jobs.quantization_plot_job, called by name: kiln.workflow.entry)."""
from kiln.workflow import jobs
from kiln.workflow.entry import run_job

run_job(snakemake, jobs.quantization_plot_job)
