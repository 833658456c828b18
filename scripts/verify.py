"""Snakemake script: rebuild results/<model> in a scratch directory and compare (kiln.verify)."""
from kiln.config import build_config
from kiln.verify import verify_job
from kiln.workflow import logs

config = build_config(snakemake.config)
logs.run_job(snakemake.log[0], verify_job, config, snakemake.params.model, snakemake.params.workdir,
             snakemake.output.report, snakemake.threads)
