"""Snakemake script: validation inputs and torch outputs of a model, once (kiln.workflow.jobs.reference_job, called by name: kiln.workflow.entry)."""
from kiln.workflow import jobs
from kiln.workflow.entry import run_job

run_job(snakemake, jobs.reference_job)
