"""Shared helpers for kiln's benchmarks: timing children with their peak RSS, workspaces."""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def run_measured(args: list[str], cwd: Path | None = None, env: dict | None = None, check: bool = True) -> dict:
    """Run a child process; return its wall time, peak RSS (from wait4's rusage), exit code and output.
    ``check``: raise when it fails (with the end of its output)."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, cwd=cwd, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0 and check:
        raise RuntimeError(f"{' '.join(args)} failed ({code}):\n{output.decode(errors='replace')[-3000:]}")
    return {"wall_s": round(wall, 3), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "returncode": code,
            "output": output.decode(errors="replace")}


def snakemake_failures(root: Path, output: str, tail: int = 6) -> list[str]:
    """Each failed job of a Snakemake run (its output ``output``, in workspace ``root``): the rule, its
    log file and the log's last ``tail`` lines, where the job's own error message is."""
    failures = []
    for rule, body in re.findall(r"^Error in rule (\S+?):\n(.*?)(?=^\S|\Z)", output, re.M | re.S):
        log = re.search(r"^\s+log: (\S+)", body, re.M)
        lines = []
        if log and (root / log.group(1)).is_file():
            lines = (root / log.group(1)).read_text(errors="replace").splitlines()[-tail:]
        failures.append(f"rule {rule} (log {log.group(1) if log else 'none'}):\n" + "\n".join(lines))
    return failures


def median_time(args: list[str], cwd: Path, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(args, cwd=cwd, check=True, capture_output=True,
                       env={**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"})
        times.append(time.perf_counter() - started)
    return {"median_s": round(statistics.median(times), 3), "runs_s": [round(t, 3) for t in times]}


def copy_workflow(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        if rel.startswith(("tests/", "benchmarks/")) or not (REPO / rel).is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    return dest


def emit(result: dict, out: str | None) -> int:
    """Print a benchmark's JSON result and write it to ``out`` when given (the scripts' CLI ending)."""
    import json

    text = json.dumps(result, indent=2)
    if out:
        Path(out).write_text(text + "\n")
    print(text)
    return 0
