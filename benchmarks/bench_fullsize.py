"""The full-size synthetic stand-ins through the whole workflow with the real entries' settings
(issue 29 item 3): for each of Parakeet TDT v3, Parakeet EOU and Kokoro, a fresh copy of the
workflow whose config.yaml is the repository's with only that model enabled and its `source` replaced
by a random-initialised checkpoint of the full-size architecture (`synthetic: true`); contracts,
tolerances, quantization strategies and resources stay the real entry's. Then
`snakemake --cores 2 --keep-going all_<model>`, timed, and per job its seconds and peak RSS from
Snakemake's benchmark files (logs/<model>/**/*.benchmark.tsv), summed per stage.

    python benchmarks/bench_fullsize.py [--models kokoro,parakeet_eou] [--workdir DIR] [--out results.json]

Goals (2 cores): each model < 15 min wall, peak RSS < 8 GiB per job. On a shared machine the
figures are upper bounds.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))

from common import VENV_BIN, copy_workflow, emit, run_measured, snakemake_failures  # noqa: E402

MODELS = ("parakeet_tdt_v3", "parakeet_eou", "kokoro")
GOALS = {"total_s": 15 * 60.0, "peak_rss_mib": 8 * 1024}


def configure(root: Path, model: str, seed: int = 0) -> None:
    """config.yaml of the workflow copy in ``root``: ``model`` alone enabled, its source the random
    full-size architecture, labelled synthetic; every other setting the real entry's."""
    path = root / "config.yaml"
    config = yaml.safe_load(path.read_text())
    if model not in config["models"]:
        raise KeyError(f"config.yaml has no model '{model}'")
    for name, entry in config["models"].items():
        entry["enabled"] = name == model
    entry = config["models"][model]
    entry["source"] = {"kind": "random", "architecture": "full", "seed": seed}
    entry["synthetic"] = True
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _number(text: str | None) -> float | None:
    return round(float(text), 1) if text not in (None, "", "NA", "-") else None


def job_table(root: Path, model: str) -> list[dict]:
    """One row per job from Snakemake's benchmark files: job, stage, wall seconds, peak RSS (MiB), CPU
    seconds and mean load (CPU seconds do not grow with other processes' load as wall seconds do)."""
    rows = []
    logs = root / "logs" / model
    for tsv in sorted(logs.rglob("*.benchmark.tsv")):
        rel = tsv.relative_to(logs).as_posix().removesuffix(".benchmark.tsv")
        with tsv.open() as handle:
            record = next(csv.DictReader(handle, delimiter="\t"))
        rows.append({"job": rel, "stage": rel.split("/")[0], "s": round(float(record["s"]), 1),
                     "max_rss_mib": _number(record.get("max_rss")), "cpu_s": _number(record.get("cpu_time")),
                     # the share of one CPU the job had on average: far below 100 x threads on a shared host
                     "mean_load": _number(record.get("mean_load"))})
    return rows


def summarize(root: Path, model: str, wall: float, returncode: int, output: str) -> dict:
    rows = job_table(root, model)
    stages: dict[str, float] = defaultdict(float)
    cpu: dict[str, float] = defaultdict(float)
    for row in rows:
        stages[row["stage"]] += row["s"]
        cpu[row["stage"]] += row["cpu_s"] or 0.0
    peak = max((row["max_rss_mib"] or 0.0 for row in rows), default=0.0)
    slowest = sorted(rows, key=lambda r: -r["s"])[:8]
    result = {
        "model": f"{model} (random weights, architecture full)", "synthetic": True,
        "command": f"snakemake --cores 2 --keep-going all_{model}", "returncode": returncode,
        "wall_s": round(wall, 1), "jobs": len(rows),
        "stage_seconds": {k: round(v, 1) for k, v in sorted(stages.items())},
        "stage_cpu_seconds": {k: round(v, 1) for k, v in sorted(cpu.items())},
        "slowest_jobs": slowest, "peak_rss_mib": peak,
        "jobs_table": rows,
        "goals": {**GOALS, "total_met": returncode == 0 and wall < GOALS["total_s"],
                  "peak_rss_met": peak < GOALS["peak_rss_mib"]},
    }
    if returncode != 0:
        result["failures"] = snakemake_failures(root, output) or [output[-3000:]]
    return result


def run_model(model: str, workdir: Path | None = None) -> dict:
    """Build one model in ``workdir`` (kept) or a temporary directory (kept when a job fails)."""
    root = copy_workflow(workdir or Path(tempfile.mkdtemp(prefix=f"kiln-bench-fullsize-{model}-")))
    configure(root, model)
    load_before = os.getloadavg()
    started = time.perf_counter()
    measured = run_measured([str(VENV_BIN / "snakemake"), "--cores", "2", "--keep-going", f"all_{model}"],
                            cwd=root, check=False)
    result = summarize(root, model, time.perf_counter() - started, measured["returncode"], measured["output"])
    result["snakemake_peak_rss_mib"] = measured["peak_rss_mib"]
    # wall seconds grow with other processes' load, CPU seconds much less: both, with the host's load
    result["cpu_s_total"] = round(sum(result["stage_cpu_seconds"].values()), 1)
    result["host_load_1min"] = {"start": round(load_before[0], 2), "end": round(os.getloadavg()[0], 2),
                                "cores": os.cpu_count()}
    if measured["returncode"] != 0 or workdir:
        result["workspace"] = str(root)
    else:
        shutil.rmtree(root)
    return result


def run(models: tuple[str, ...] = MODELS, workdir: str | None = None) -> dict:
    """Each model in turn (one at a time: a full-size job takes both cores). A failed model is
    recorded with its failing jobs and does not stop the others."""
    results = {}
    for model in models:
        results[model] = run_model(model, Path(workdir) / model if workdir else None)
    failed = [m for m, r in results.items() if r["returncode"] != 0]
    if failed:
        raise RuntimeError(f"full-size build failed for {', '.join(failed)}: "
                           + "\n".join(f for m in failed for f in results[m]["failures"]))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    parser.add_argument("--workdir", help="build in DIR/<model> and keep it (default: temporary directories)")
    parser.add_argument("--out")
    args = parser.parse_args()
    models = tuple(args.models.split(","))
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    results = {}
    for model in models:   # report every model, failed or not
        results[model] = run_model(model, Path(args.workdir) / model if args.workdir else None)
    emit(results, args.out)
    return 0 if all(r["returncode"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
