"""No-op overhead: `snakemake -n all` on a built tree vs a one-rule Snakefile's dry run (goal: 1.3x).

Paired runs: each round runs the one-rule dry run and kiln's, one after the other, so a busy host
slows both alike; the ratio is the median of the per-round ratios, of wall time and of CPU time
(user + system of the snakemake process: less sensitive to other load). ``run()`` builds the
default config's whole DAG by marking every job done (``snakemake --touch``: the planning work of a
no-op does not depend on what the jobs computed); ``measure(ws)`` takes a workspace that is really
built (bench_quantize passes its own).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, VENV_BIN, copy_workflow

GOAL_RATIO_MAX = 1.3
ONE_RULE = """
rule one:
    output: "one.txt"
    shell: "echo 1 > {output}"
"""


def _timed(args: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system of the process and its children), stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True,
                            env={**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), result.stdout


def measure(workspace: Path, rounds: int = 5) -> dict:
    snakemake = str(VENV_BIN / "snakemake")
    _timed([snakemake, "-n", "all"], workspace)   # warm: caches written by the first start after a build
    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        baseline_dir = Path(tmp)
        (baseline_dir / "Snakefile").write_text(ONE_RULE)
        (baseline_dir / "one.txt").write_text("1\n")
        for _ in range(rounds):
            one = _timed([snakemake, "-n"], baseline_dir)
            kiln = _timed([snakemake, "-n", "all"], workspace)
            if "Nothing to be done" not in kiln[2]:
                raise RuntimeError(f"the tree in {workspace} is not built: `snakemake -n all` plans jobs")
            pairs.append((one, kiln))
    wall = [k[0] / o[0] for o, k in pairs]
    cpu = [k[1] / o[1] for o, k in pairs]
    return {
        "rounds": rounds,
        "kiln_dry_run_wall_s": [round(k[0], 3) for _, k in pairs],
        "one_rule_dry_run_wall_s": [round(o[0], 3) for o, _ in pairs],
        "kiln_dry_run_cpu_s": [round(k[1], 3) for _, k in pairs],
        "one_rule_dry_run_cpu_s": [round(o[1], 3) for o, _ in pairs],
        "ratio_wall": round(statistics.median(wall), 3),
        "ratio_cpu": round(statistics.median(cpu), 3),
        "goal_ratio_max": GOAL_RATIO_MAX,
        "met": statistics.median(wall) <= GOAL_RATIO_MAX,
    }


def run() -> dict:
    sys.path.insert(0, str(REPO))
    from tests.helpers.workspaces import Workspace, commit_workspace, fake_build

    with tempfile.TemporaryDirectory() as tmp:
        ws = commit_workspace(Workspace(copy_workflow(Path(tmp) / "kiln")))
        fake_build(ws, "all")
        jobs = len(ws.planned_jobs("all", "--forceall"))
        return {"dag": "the default config's `all`, every job marked done", "jobs": jobs, **measure(ws.root)}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
