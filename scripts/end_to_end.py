"""Snakemake script: the cross-component task through the packages (kiln.workflow.jobs.end_to_end_job, called by name: kiln.workflow.entry)."""
from kiln.workflow import jobs
from kiln.workflow.entry import run_job

run_job(snakemake, jobs.end_to_end_job)
