"""Snakemake script: load a model's source once and trace its components (kiln.workflow.jobs.prepare_job, called by name: kiln.workflow.entry)."""
from kiln.workflow import jobs
from kiln.workflow.entry import run_job

run_job(snakemake, jobs.prepare_job)
