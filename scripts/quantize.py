"""Snakemake script: build and score one quantized variant (kiln.workflow.jobs.quantize_job, called by name: kiln.workflow.entry)."""
from kiln.workflow import jobs
from kiln.workflow.entry import run_job

run_job(snakemake, jobs.quantize_job)
