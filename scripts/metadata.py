"""Snakemake script: aggregate a model's records into metadata.json (see kiln.workflow.jobs.metadata_job)."""
from kiln.config import build_config
from kiln.workflow import jobs, logs

logs.run_job(snakemake.log[0], jobs.metadata_job, build_config(snakemake.config), snakemake.wildcards.model,
             snakemake.input.source, snakemake.input.prepare_record,
             snakemake.input.torch_latency, list(snakemake.input.exports), list(snakemake.input.parities),
             list(snakemake.input.compiles), snakemake.input.end_to_end,
             snakemake.output.metadata, snakemake.params.plots_dir, snakemake.output.table)
