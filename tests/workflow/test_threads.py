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


def test_a_job_that_imports_torch_itself_gets_its_threads_and_one_that_does_not_never_loads_it(tmp_path):
    """The pin does not import torch (~1.5 s a job): a job that imports it later still runs on its
    threads, and a job that never runs torch (metadata, the summaries) never loads it."""
    script = textwrap.dedent("""
        import json, sys
        from kiln.workflow import logs

        def torch_job():
            import torch
            from threadpoolctl import threadpool_info
            return {"torch": torch.get_num_threads(),
                    "blas": [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]}

        quiet = logs.run_job(None, lambda: "torch" in sys.modules, threads=1)
        print(json.dumps({"quiet_loaded_torch": quiet, "pinned": logs.run_job(None, torch_job, threads=1)}))
    """)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["quiet_loaded_torch"] is False
    assert result["pinned"]["torch"] == 1 and result["pinned"]["blas"] and set(result["pinned"]["blas"]) == {1}


def test_a_job_imports_coremltools_without_scikit_learn_and_can_still_import_it(tmp_path):
    """coremltools imports scikit-learn only to switch its sklearn converters off (the pinned 1.9.1 is
    above the 1.5.1 it supports): a job skips that import, and k-means palettization, which imports
    scikit-learn when it runs, still gets it."""
    script = textwrap.dedent("""
        import json, sys
        from kiln.workflow import logs

        def job():
            import coremltools
            from coremltools import _deps
            during = "sklearn" in sys.modules
            import sklearn.cluster
            return {"loaded_with_coremltools": during, "has_sklearn_converters": _deps._HAS_SKLEARN,
                    "kmeans": sklearn.cluster.KMeans.__name__}

        print(json.dumps(logs.run_job(None, job, threads=1)))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"loaded_with_coremltools": False, "has_sklearn_converters": False, "kmeans": "KMeans"}
