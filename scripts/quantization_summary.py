"""Snakemake script: a model's quantization_summary.json, strategies plot and report table (see kiln.workflow.jobs)."""
from kiln.config import build_config
from kiln.workflow import jobs, logs

logs.run_job(snakemake.log[0], jobs.quantization_summary_job, build_config(snakemake.config),
             snakemake.wildcards.model, list(snakemake.input.records), snakemake.output.summary,
             snakemake.output.strategies_plot, snakemake.output.table, snakemake.input.facts,
             snakemake.input.task, dict(snakemake.params.packages), mem_mb=snakemake.resources.mem_mb)
