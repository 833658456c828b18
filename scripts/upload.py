"""Snakemake script: upload a staged model repo folder (publish_<model>; kiln.distribution.publish.upload_job, called by name: kiln.workflow.entry)."""
from kiln.distribution.publish import upload_job
from kiln.workflow.entry import run_job

run_job(snakemake, upload_job)
