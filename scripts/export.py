"""Snakemake script: export one component (rules export, export_ios18) (kiln.workflow.jobs.export_job, called by name: kiln.workflow.entry)."""
from kiln.workflow import jobs
from kiln.workflow.entry import run_job

run_job(snakemake, jobs.export_job)
