"""A Snakemake run killed outright (kill -9 of Snakemake and its job, as a lost node or an OOM killer
would) is recovered by running again: `snakemake --unlock` for the lock it could not release, then
the same command regenerates the job whose output was marked incomplete (the workflow profile sets
rerun-incomplete; before: IncompleteFilesException until the user added --rerun-incomplete)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.helpers.workspaces import VENV_BIN, copy_workflow

pytestmark = pytest.mark.slow


def test_a_run_killed_mid_job_is_recovered_by_running_again(tmp_path):
    ws = copy_workflow(tmp_path / "ws")
    target = "results/silero_vad/source.json"
    output = ws.root / target
    run = subprocess.Popen([str(VENV_BIN / "snakemake"), "--cores", "1", target], cwd=ws.root, env=ws.env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not output.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    # the job has written its output; Snakemake has not yet recorded the job as finished
    assert run.poll() is None and output.exists(), "killed too late or never ran: the test would prove nothing"
    os.killpg(run.pid, signal.SIGKILL)   # Snakemake and its job, with no chance to clean up
    run.wait()
    locked = ws.snakemake("--cores", "1", target, check=False)
    assert locked.returncode != 0 and "LockException" in locked.stdout + locked.stderr
    ws.snakemake("--unlock")
    again = ws.snakemake("--cores", "1", target, check=False)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "IncompleteFilesException" not in again.stdout + again.stderr
    assert "rule fetch" in again.stdout + again.stderr   # the job whose completion was not recorded, run again
    assert json.loads(output.read_text())["files"]
