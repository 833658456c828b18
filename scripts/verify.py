"""Snakemake script: rebuild results/<model> in a scratch directory and compare (kiln.verify.verify_job)."""
from kiln.verify import verify_job
from kiln.workflow.entry import run_job

run_job(snakemake, verify_job)
