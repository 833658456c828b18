"""Snakemake script: a model's quantization_summary.json, strategies plot and report table (kiln.workflow.jobs.quantization_summary_job, called by name: kiln.workflow.entry)."""
from kiln.workflow import jobs
from kiln.workflow.entry import run_job

run_job(snakemake, jobs.quantization_summary_job)
