"""Snakemake script: rebuild results/<model> in a scratch directory and compare (kiln.distribution.verify.verify_job)."""
from kiln.distribution.verify import verify_job
from kiln.workflow.entry import run_job

run_job(snakemake, verify_job)
