"""A job pinned to its threads keeps torch and numpy's BLAS within them (two jobs on two cores must
not run four threads), checked in a fresh process as Snakemake starts a job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap


def test_a_pinned_job_runs_torch_and_blas_on_its_threads(tmp_path):
    script = textwrap.dedent("""
        import json, sys
        import numpy, torch
        from threadpoolctl import threadpool_info
        from kiln.workflow import logs

        def job():
            blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
            return {"torch": torch.get_num_threads(), "blas": blas}

        before = job()
        print(json.dumps({"before": before, "pinned": logs.run_job(None, job, threads=1)}))
    """)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["before"]["blas"] and result["before"]["torch"] == 2 and 2 in result["before"]["blas"]
    assert result["pinned"] == {"torch": 1, "blas": [1] * len(result["before"]["blas"])}
