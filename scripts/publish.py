"""Snakemake script: stage a model repo folder (stage_<model>) or upload it (publish_<model>); see kiln.publish."""
from kiln.publish import stage_job, upload_job
from kiln.workflow.entry import run_job

run_job(snakemake, upload_job if "record" in snakemake.output.keys() else stage_job)
