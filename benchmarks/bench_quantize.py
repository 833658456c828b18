"""`snakemake quantize_all` for Silero VAD at --cores 1 vs --cores 2 (speedup), per-strategy times;
then, in the fully built workspace, the no-op dry-run overhead (bench_noop)."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import yaml

import bench_noop
from common import VENV_BIN, copy_workflow, median_time


def _strategy_times(root: Path) -> dict:
    times: dict[str, dict] = {}
    for tsv in sorted((root / "logs" / "silero_vad" / "quantize").glob("*/*.benchmark.tsv")):
        with open(tsv) as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        times.setdefault(tsv.parent.name, {})[tsv.name.split(".")[0]] = {
            "wall_s": float(row["s"]), "peak_rss_mib": float(row["max_rss"])}
    return times


def _silero_only(workspace: Path) -> None:
    path = workspace / "config.yaml"
    config = yaml.safe_load(path.read_text())
    for name, model in config["models"].items():
        if name != "silero_vad":
            model["enabled"] = False
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def run() -> dict:
    out = {"model": "silero_vad", "synthetic": False}
    snakemake = str(VENV_BIN / "snakemake")
    with tempfile.TemporaryDirectory() as tmp:
        for cores in (1, 2):
            ws = copy_workflow(Path(tmp) / f"cores{cores}")
            _silero_only(ws)
            median_time([snakemake, "--cores", "2", "validate_all"], ws, 1)  # base packages, not timed
            timing = median_time([snakemake, "--cores", str(cores), "quantize_all"], ws, 1)
            out[f"cores_{cores}_wall_s"] = timing["median_s"]
            out[f"cores_{cores}_per_strategy"] = _strategy_times(ws)
        out["speedup_2_vs_1"] = round(out["cores_1_wall_s"] / out["cores_2_wall_s"], 3)
        # the no-op is measured on a whole tree: the rest of `all` (metadata, contract, plots) first
        median_time([snakemake, "--cores", "2", "all"], ws, 1)
        out["noop_overhead"] = bench_noop.measure(ws)
    return out
