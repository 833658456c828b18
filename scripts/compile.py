"""Snakemake script: compile one package (kiln.workflow.jobs.compile_job, called by name: kiln.workflow.entry)."""
from kiln.workflow import jobs
from kiln.workflow.entry import run_job

run_job(snakemake, jobs.compile_job)
