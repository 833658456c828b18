"""Snakemake script: aggregate a model's records into metadata.json (kiln.workflow.jobs.metadata_job, called by name: kiln.workflow.entry)."""
from kiln.workflow import jobs
from kiln.workflow.entry import run_job

run_job(snakemake, jobs.metadata_job)
