"""Snakemake script: export one component (see kiln.workflow.jobs.export_job)."""
from kiln.config import build_config
from kiln.workflow import jobs, logs

logs.run_job(snakemake.log[0], jobs.export_job, build_config(snakemake.config), snakemake.wildcards.model,
             snakemake.wildcards.component, snakemake.input.source, snakemake.input.program,
             snakemake.output.package, snakemake.output.record,
             snakemake.params.get("deployment_target"))
