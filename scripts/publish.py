"""Snakemake script: stage a model repo folder (stage_<model>) or upload it (publish_<model>); see kiln.publish."""
from kiln.config import build_config
from kiln.publish import stage_job, upload_job
from kiln.workflow import logs

config = build_config(snakemake.config)
if "folder" in snakemake.output.keys():
    logs.run_job(snakemake.log[0], stage_job, config, snakemake.params.model, snakemake.output.folder)
else:
    logs.run_job(snakemake.log[0], upload_job, config, snakemake.params.model, snakemake.input.folder,
                 snakemake.output.record)
