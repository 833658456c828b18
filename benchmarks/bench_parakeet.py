"""Parakeet TDT v3 on random weights (synthetic), the whole workflow as a user runs it:
`snakemake --cores 2 all_parakeet_tdt_v3` from a clean results/ in a fresh copy of the workflow, the
source a random-initialised checkpoint of the chosen architecture (`full` = the published 0.6B v3).
Reports wall time per stage (sum of its jobs) and in total, peak RSS per job (Snakemake's benchmark
files), and how many times the source was loaded (prepare jobs run; logs that restored a .nemo).

    python benchmarks/bench_parakeet.py [--architecture tiny|full] [--out results.json]

Goals (full size, 2 cores): export of all seven components < 5 min in total, one source load, peak
RSS < 8 GiB per job, the whole model (export, compile, validate, quantize with int8_per_channel,
int8_per_tensor, palettize_6bit) < 30 min.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))

from common import VENV_BIN, copy_workflow, emit, run_measured, snakemake_failures  # noqa: E402

MODEL = "parakeet_tdt_v3"
STRATEGIES = ["int8_per_channel", "int8_per_tensor", "palettize_6bit"]
GOALS = {"export_total_s": 300.0, "peak_rss_mib": 8 * 1024, "total_s": 1800.0, "source_loads": 1}


def configure(root: Path, architecture: str) -> None:
    """The configured parakeet_tdt_v3 entry with a random source of ``architecture``; the other models
    disabled; the benchmark's quantization strategies on every component."""
    path = root / "config.yaml"
    config = yaml.safe_load(path.read_text())
    for name, model in config["models"].items():
        model["enabled"] = name == MODEL
    model = config["models"][MODEL]
    model["source"] = {"kind": "random", "architecture": architecture, "seed": 0}
    model["synthetic"] = True
    model["quantize"] = {"strategies": STRATEGIES}
    # random weights: the synthetic entry's tolerances (argmax near-ties, larger LSTM states)
    model["validate"] = config["models"][f"{MODEL}_tiny"]["validate"]
    if architecture == "tiny":   # the tiny architecture's contract is the tiny entry's
        model["components"] = config["models"][f"{MODEL}_tiny"]["components"]
    for component in model["components"].values():
        component.pop("quantize", None)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def job_table(root: Path) -> list[dict]:
    """One row per job from Snakemake's benchmark files: rule, job, seconds, peak RSS (MiB)."""
    rows = []
    logs = root / "logs" / MODEL
    for tsv in sorted(logs.rglob("*.benchmark.tsv")):
        rel = tsv.relative_to(logs).as_posix().removesuffix(".benchmark.tsv")
        with tsv.open() as handle:
            record = next(csv.DictReader(handle, delimiter="\t"))
        stage = rel.split("/")[0]
        rows.append({"job": rel, "stage": stage, "s": float(record["s"]),
                     "max_rss_mib": float(record["max_rss"]) if record["max_rss"] not in ("", "NA") else None})
    return rows


def source_loads(root: Path) -> dict:
    logs = root / "logs" / MODEL
    restoring = sorted(p.relative_to(logs).as_posix() for p in logs.rglob("*.log")
                       if "(the only source load of this build)" in p.read_text())
    return {"prepare_jobs": len(restoring), "logs": restoring}


def run(architecture: str = "full", workdir: str | None = None) -> dict:
    """``workdir`` (kept afterwards, for its logs) or a temporary directory, kept when a job fails."""
    root = copy_workflow(Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"kiln-bench-parakeet-"
                                                                                     f"{architecture}-")))
    configure(root, architecture)
    started = time.perf_counter()
    # --keep-going: one run names every job that fails, not only the first
    measured = run_measured([str(VENV_BIN / "snakemake"), "--cores", "2", "--keep-going", f"all_{MODEL}"],
                            cwd=root, check=False)
    total = time.perf_counter() - started
    if measured["returncode"] != 0:
        failures = snakemake_failures(root, measured["output"]) or [measured["output"][-3000:]]
        raise RuntimeError(f"snakemake all_{MODEL} failed after {total:.0f} s; workspace kept in {root}\n"
                           + "\n".join(failures))
    rows = job_table(root)
    stages: dict[str, float] = defaultdict(float)
    for row in rows:
        stages[row["stage"]] += row["s"]
    loads = source_loads(root)
    metadata = json.loads((root / "results" / MODEL / "metadata.json").read_text())
    summary = json.loads((root / "results" / MODEL / "quantization_summary.json").read_text())
    if not workdir:
        shutil.rmtree(root)
    export_total = stages.get("export", 0.0) + stages.get("prepare", 0.0)
    peak = max((r["max_rss_mib"] or 0.0) for r in rows)
    return {
        "model": f"{MODEL} (random weights, architecture {architecture})", "synthetic": True,
        "command": f"snakemake --cores 2 all_{MODEL}", "wall_s": round(total, 1),
        "snakemake_peak_rss_mib": measured["peak_rss_mib"],
        "stage_seconds": {k: round(v, 1) for k, v in sorted(stages.items())},
        "export_seconds_including_prepare": round(export_total, 1),
        "peak_rss_mib_per_job": {r["job"]: r["max_rss_mib"] for r in rows},
        "source_loads": loads,
        "end_to_end": {b: {k: v for k, v in r.items() if k in ("vs_torch_cpu", "encoder_length")}
                       for b, r in (metadata.get("end_to_end") or {}).get("backends", {}).items()},
        "quantization": [{k: r.get(k) for k in ("strategy", "component", "status", "size_ratio", "quality")}
                         for r in summary["results"]],
        "goals": {**GOALS, "export_met": export_total < GOALS["export_total_s"],
                  "peak_rss_met": peak < GOALS["peak_rss_mib"], "total_met": total < GOALS["total_s"],
                  "source_loads_met": loads["prepare_jobs"] == GOALS["source_loads"]},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architecture", choices=["tiny", "full"], default="full")
    parser.add_argument("--workdir", help="build here and keep it (default: a temporary directory)")
    parser.add_argument("--out")
    args = parser.parse_args()
    result = run(args.architecture, args.workdir)
    return emit(result, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
