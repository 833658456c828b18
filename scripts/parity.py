"""Snakemake script: validate one component (kiln.workflow.jobs.parity_job, called by name: kiln.workflow.entry)."""
from kiln.workflow import jobs
from kiln.workflow.entry import run_job

run_job(snakemake, jobs.parity_job)
