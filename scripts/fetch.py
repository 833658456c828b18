"""Snakemake script: fetch a model's source (kiln.workflow.jobs.fetch_job, called by name: kiln.workflow.entry)."""
from kiln.workflow import jobs
from kiln.workflow.entry import run_job

run_job(snakemake, jobs.fetch_job)
