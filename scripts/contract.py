"""Snakemake script: check a built model against its consumer's contract (kiln.workflow.jobs.contract_job, called by name: kiln.workflow.entry)."""
from kiln.workflow import jobs
from kiln.workflow.entry import run_job

run_job(snakemake, jobs.contract_job)
