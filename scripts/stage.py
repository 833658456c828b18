"""Snakemake script: stage a model repo folder (stage_<model>; kiln.distribution.publish.stage_job, called by name: kiln.workflow.entry)."""
from kiln.distribution.publish import stage_job
from kiln.workflow.entry import run_job

run_job(snakemake, stage_job)
