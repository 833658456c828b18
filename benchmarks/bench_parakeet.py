"""Parakeet TDT v3 on random weights (synthetic): export wall time and peak RSS per component, each
export in a fresh process; kiln executor vs torch latency on the encoder. For the full-size v3
architecture (0.6B parameters) and the tiny test architecture.

    python benchmarks/bench_parakeet.py [--only tiny|full] [--out results.json]

Goals (full size): all seven components exported in under 5 minutes in total, each under 8 GiB
peak RSS; the executor within 1.5x of torch on the encoder.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import run_measured  # noqa: E402

EXPORT_GOAL_S = 300.0
RSS_GOAL_MIB = 8 * 1024
RATIO_GOAL = 1.5

BUILD = """
import sys, json
from kiln.models.parakeet_tdt import FAMILY
path = FAMILY.build_random(sys.argv[1], seed=0, overrides={}, out_dir=sys.argv[2])
print("PATH=" + str(path))
"""

CHILD_COMMON = """
import json, sys, dataclasses, time
from kiln.config import build_config
from kiln.models.parakeet_tdt import FAMILY, component_contracts

def component(src, path, name, precision):
    raw = {"models": {"bench": {"family": "parakeet_tdt", "task": "stt",
                                "source": {"kind": "path", "path": path},
                                "components": component_contracts(src)}}}
    comp = build_config(raw).component("bench", name)
    return dataclasses.replace(comp, export=dataclasses.replace(comp.export, compute_precision=precision))
"""

EXPORT = CHILD_COMMON + """
from kiln.export.convert import export_component
path, name, precision, out, record = sys.argv[1:6]
started = time.perf_counter()
src = FAMILY.load_path(path)
loaded = time.perf_counter()
report = export_component(FAMILY, src, component(src, path, name, precision), out)
report["load_s"] = round(loaded - started, 3)
json.dump(report, open(record, "w"))
"""

LATENCY = CHILD_COMMON + """
import numpy as np, torch
from kiln.mil import load_model
path, package, precision, repeats, record = sys.argv[1:6]
repeats = int(repeats)
src = FAMILY.load_path(path)
comp = component(src, path, "encoder", precision)
wrapper = FAMILY.build_component(src, comp)
rng = np.random.default_rng(0)
inputs = FAMILY.example_inputs(comp)
args = [torch.from_numpy(inputs[t.name]) for t in comp.inputs]
torch.set_num_threads(torch.get_num_threads())

def timed(fn):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]

with torch.no_grad():
    torch_s = timed(lambda: wrapper(*args))
model = load_model(package)
out = {"torch_cpu_ms": round(torch_s * 1e3, 2), "threads": torch.get_num_threads(), "repeats": repeats}
for mode in ("fp32", "fp16"):
    plan = model.plan(precision=mode)
    s = timed(lambda: plan.run(inputs))
    out[f"kiln_{mode}_ms"] = round(s * 1e3, 2)
    out[f"kiln_{mode}_vs_torch"] = round(s / torch_s, 3)
json.dump(out, open(record, "w"))
"""

COMPONENTS = ("preprocessor", "encoder", "mel_encoder", "decoder", "joint", "joint_decision",
              "joint_decision_single_step")
#: export precision per component (the preprocessor loses too much in fp16: see parakeet_tdt.py)
PRECISION = {"preprocessor": "float32"}


def bench_architecture(architecture: str, workdir: Path, repeats: int) -> dict:
    built = run_measured([sys.executable, "-c", BUILD, architecture, str(workdir)])
    path = next(line[5:] for line in built["output"].splitlines() if line.startswith("PATH="))
    out: dict = {"architecture": architecture, "synthetic": True,
                 "checkpoint_bytes": Path(path).stat().st_size,
                 "build_random": {"wall_s": built["wall_s"], "peak_rss_mib": built["peak_rss_mib"]},
                 "components": {}}
    total = 0.0
    peak = 0.0
    for name in COMPONENTS:
        precision = PRECISION.get(name, "float16")
        package = workdir / f"{name}.mlpackage"
        record = workdir / f"{name}.json"
        measured = run_measured([sys.executable, "-c", EXPORT, path, name, precision, str(package), str(record)])
        report = json.loads(record.read_text())
        size = sum(p.stat().st_size for p in package.rglob("*") if p.is_file())
        out["components"][name] = {"precision": precision, "process_wall_s": measured["wall_s"],
                                   "peak_rss_mib": measured["peak_rss_mib"], "load_source_s": report["load_s"],
                                   "trace_convert_save_s": report["seconds"], "package_bytes": size}
        total += measured["wall_s"]
        peak = max(peak, measured["peak_rss_mib"])
        print(f"[bench_parakeet] {architecture}/{name}: {measured['wall_s']:.1f} s, "
              f"{measured['peak_rss_mib']:.0f} MiB", file=sys.stderr, flush=True)
    record = workdir / "latency.json"
    run_measured([sys.executable, "-c", LATENCY, path, str(workdir / "encoder.mlpackage"), "float16",
                  str(repeats), str(record)])
    out["encoder_latency"] = json.loads(record.read_text())
    out["export_total_s"] = round(total, 2)
    out["export_peak_rss_mib"] = peak
    out["goals"] = {
        "export_total_under_s": EXPORT_GOAL_S, "export_total_met": total < EXPORT_GOAL_S,
        "peak_rss_under_mib": RSS_GOAL_MIB, "peak_rss_met": peak < RSS_GOAL_MIB,
        "executor_vs_torch_under": RATIO_GOAL,
        "executor_fp32_met": out["encoder_latency"]["kiln_fp32_vs_torch"] < RATIO_GOAL,
        "executor_fp16_met": out["encoder_latency"]["kiln_fp16_vs_torch"] < RATIO_GOAL,
    }
    return out


def run(architectures: tuple[str, ...] = ("tiny", "full")) -> dict:
    results = {"model": "parakeet_tdt_v3 (random weights)", "synthetic": True,
               "note": "export wall time includes process start, imports (NeMo ~15 s) and loading the "
                       ".nemo; each export runs in a fresh process", "architectures": {}}
    for architecture in architectures:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"kiln-bench-parakeet-{architecture}-") as tmp:
            results["architectures"][architecture] = bench_architecture(
                architecture, Path(tmp), repeats=3 if architecture == "full" else 10)
        results["architectures"][architecture]["bench_wall_s"] = round(time.perf_counter() - started, 1)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["tiny", "full"])
    parser.add_argument("--out")
    args = parser.parse_args()
    result = run((args.only,) if args.only else ("tiny", "full"))
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
