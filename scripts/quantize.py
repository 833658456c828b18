"""Snakemake script: build and score one quantized variant (see kiln.workflow.jobs.quantize_job)."""
from kiln.config import build_config
from kiln.workflow import jobs, logs

logs.run_job(snakemake.log[0], jobs.quantize_job, build_config(snakemake.config), snakemake.wildcards.model,
             snakemake.wildcards.component, snakemake.wildcards.strategy, snakemake.input.facts,
             snakemake.input.reference, snakemake.input.base, snakemake.input.package,
             snakemake.output.record, snakemake.params.out_dir, snakemake.threads, snakemake.input.program,
             threads=snakemake.threads, mem_mb=snakemake.resources.mem_mb)
