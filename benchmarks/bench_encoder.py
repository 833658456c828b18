"""kiln's executor vs torch eager on the full-size random Parakeet TDT v3 encoder, 15 s of audio
(mel [1, 128, 1501] -> [1, 1024, 188]): wall time per call with 2 threads (torch eager, kiln fp32,
kiln fp16) and the peak RSS of a process that loads the package and runs it once, against the
package's weight bytes plus the call's inputs and outputs.

    python benchmarks/bench_encoder.py [--architecture full|tiny] [--workdir DIR] [--out results.json]

Heavy (full size: a ~1.2 GB fp16 package, minutes): `make bench` runs it; `--workdir` keeps the
random checkpoint and the package for a second run. Goals (issue 10): fp32 <= 1.0x torch eager,
fp16 <= 1.2x, peak RSS <= 1.3x weight bytes + inputs/outputs (above the base of a process that
imported torch, coremltools and kiln)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import emit  # noqa: E402

SAMPLES = 240_000  # 15 s at 16 kHz
THREADS = 2
REPEATS = 3  # kiln runs of the memory children, copies of the package
ROUNDS = 9  # interleaved speed rounds (a shared host drifts; the ratio is the median of per-round ratios)
GOALS = {"fp32_vs_torch_max": 1.0, "fp16_vs_torch_max": 1.2, "rss_vs_weights_plus_io_max": 1.3,
         "compile_job_vs_copy_max": 2.0}

# Runs in a fresh process: import, load, (plan), run once; prints JSON with ru_maxrss.
_CHILD = r"""
import json, sys, time
import numpy as np
import torch
torch.set_num_threads({threads})
import coremltools, kiln.mil


def peak_kib():
    # VmHWM: this process image's own high-water mark (ru_maxrss would include the parent's RSS
    # at fork, which Linux carries over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])


out = {{"base_kib": peak_kib()}}
if {run}:
    model = kiln.mil.load_model({package!r})
    inputs = dict(np.load({inputs!r}))
    times = []
    for _ in range({repeats}):
        started = time.perf_counter()
        model.predict(inputs, precision={precision!r})
        times.append(time.perf_counter() - started)
    out["times_s"] = times
    out["pool_bytes"] = model.constants.nbytes()
out["peak_kib"] = peak_kib()
print("RESULT", json.dumps(out))
"""


def _child(**params) -> dict:
    return _run_child(_CHILD.format(threads=THREADS, repeats=REPEATS, **params))


def _run_child(code: str) -> dict:
    """Run ``code`` in a fresh Python with THREADS math threads; the JSON it prints after RESULT."""
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "OPENBLAS_NUM_THREADS": str(THREADS),
           "MKL_NUM_THREADS": str(THREADS)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if run.returncode != 0:
        raise RuntimeError(f"benchmark child failed ({run.returncode}):\n{run.stderr[-3000:]}")
    line = next(l for l in run.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def _build(architecture: str, work: Path):
    """The random checkpoint, its encoder package (cached in ``work``) and the component config."""
    from kiln.config import build_config
    from kiln.export.convert import export_component
    from kiln.models.parakeet_tdt import FAMILY
    from kiln.models.parakeet_tdt.build import config_blocks, load_path

    marker = work / "src" / "done.json"
    if marker.is_file():
        nemo = Path(json.loads(marker.read_text())["nemo"])
    else:
        nemo = FAMILY.build_random(architecture, seed=0, overrides={}, out_dir=work / "src")
        marker.write_text(json.dumps({"nemo": str(nemo)}))
    source = load_path(nemo)
    contract = config_blocks(FAMILY.facts(source), SAMPLES // 16_000)["encoder"]
    config = build_config({"models": {"m": {"family": "parakeet_tdt", "task": "stt",
                                            "source": {"kind": "random", "architecture": architecture, "seed": 0},
                                            "components": {"encoder": contract}}}},
                          path=str(work / "config.yaml"))
    component = config.component("m", "encoder")
    package = work / f"encoder_{architecture}.mlpackage"
    if not package.is_dir():
        started = time.perf_counter()
        export_component(FAMILY, source, component, package)
        print(f"[bench_encoder] exported {package} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return FAMILY, source, component, package


def run(architecture: str = "full", workdir: str | None = None, rounds: int = ROUNDS) -> dict:
    import numpy as np

    from kiln.foundation.fsutil import tree_size

    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="kiln-bench-encoder-"))
    (work / "src").mkdir(parents=True, exist_ok=True)
    family, source, component, package = _build(architecture, work)
    rng = np.random.default_rng(0)
    frames = component.inputs[0].shape[-1]
    inputs = {"mel": rng.standard_normal(tuple(component.inputs[0].shape)).astype(np.float32),
              "mel_length": np.array([frames], np.int32)}
    np.savez(work / "inputs.npz", **inputs)

    # Speed: torch eager and both kiln precisions timed in one process, round after round, so a
    # change in the machine's speed (shared hosts drift by 20% within minutes) hits all three alike.
    speed = _interleaved(architecture, work, rounds)
    weights = tree_size(package / "Data" / "com.apple.CoreML" / "weights")
    io_bytes = speed["io_bytes"]
    # Memory: a fresh process per precision that loads the package and runs it (nothing else held).
    base = _child(run=False, package=str(package), inputs=str(work / "inputs.npz"), precision="fp32")
    kiln = {p: _child(run=True, package=str(package), inputs=str(work / "inputs.npz"), precision=p)
            for p in ("fp32", "fp16")}
    torch_s = statistics.median(speed["torch_s"])
    result = {"architecture": architecture, "samples": SAMPLES, "threads": THREADS, "rounds": rounds,
              "package_weight_bytes": weights, "io_bytes": io_bytes,
              "torch_eager_s": round(torch_s, 3), "torch_eager_runs_s": [round(t, 3) for t in speed["torch_s"]],
              "base_rss_mib": round(base["peak_kib"] / 1024, 1)}
    for precision, measured in kiln.items():
        runs = speed[f"kiln_{precision}_s"]
        ratios = [k / t for k, t in zip(runs, speed["torch_s"])]
        growth = (measured["peak_kib"] - base["peak_kib"]) * 1024
        result[f"kiln_{precision}"] = {
            # the first call builds the plan (reads and pools the constants): reported apart
            "first_call_s": round(speed[f"kiln_{precision}_first_s"], 3), "s": round(statistics.median(runs), 3),
            "runs_s": [round(t, 3) for t in runs],
            "vs_torch": round(statistics.median(ratios), 3),  # median of the per-round ratios
            "vs_torch_per_round": [round(r, 3) for r in ratios],
            "peak_rss_mib": round(measured["peak_kib"] / 1024, 1), "pool_bytes": measured["pool_bytes"],
            "rss_growth_vs_weights_plus_io": round(growth / (weights + io_bytes), 3)}
    result["compile_job"] = _compile_job(package, work, inputs)
    result["goals"] = GOALS
    result["goals_met"] = {
        "fp32": result["kiln_fp32"]["vs_torch"] <= GOALS["fp32_vs_torch_max"],
        "fp16": result["kiln_fp16"]["vs_torch"] <= GOALS["fp16_vs_torch_max"],
        "rss": max(result[f"kiln_{p}"]["rss_growth_vs_weights_plus_io"] for p in ("fp32", "fp16"))
        <= GOALS["rss_vs_weights_plus_io_max"],
        "compile_job": result["compile_job"]["vs_copy"] <= GOALS["compile_job_vs_copy_max"]}
    return result


def _interleaved(architecture: str, work: Path, rounds: int = ROUNDS) -> dict:
    """Per-call wall times of torch eager, kiln fp32 and kiln fp16, measured in turn for ``rounds``
    rounds in one child process (after one warm-up call each, which for kiln builds the plan)."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_encoder, json; "
            f"print('RESULT', json.dumps(bench_encoder._interleaved_in_process({architecture!r}, {str(work)!r}, "
            f"{rounds})))")
    return _run_child(code)


def _interleaved_in_process(architecture: str, workdir: str, rounds: int = ROUNDS) -> dict:
    import numpy as np
    import torch

    import kiln.mil
    from kiln.validate.backends import torch_backend

    torch.set_num_threads(THREADS)
    work = Path(workdir)
    family, source, component, package = _build(architecture, work)
    inputs = dict(np.load(work / "inputs.npz"))
    predict = torch_backend(family.build_component(source, component), component).predict
    model = kiln.mil.load_model(str(package))
    calls = {"torch": lambda: predict(inputs)}
    for precision in ("fp32", "fp16"):
        calls[f"kiln_{precision}"] = lambda p=precision: model.predict(inputs, precision=p)
    out = {}
    for name, call in calls.items():
        started = time.perf_counter()
        result = call()
        out[f"{name}_first_s"] = time.perf_counter() - started
        if name == "torch":
            out["io_bytes"] = (sum(a.nbytes for a in inputs.values())
                               + sum(np.asarray(a).nbytes for a in result.values()))
    order = list(calls)
    for index in range(rounds):
        # each round starts with another contender, so none always runs after the same one
        for name in order[index % len(order):] + order[:index % len(order)]:
            call = calls[name]
            started = time.perf_counter()
            call()
            out.setdefault(f"{name}_s", []).append(time.perf_counter() - started)
    return out


def _compile_job(package: Path, work: Path, inputs: dict) -> dict:
    """The compile job's work on the package (kiln's compiler, the bundle's digest, the round-trip
    check: structure, weights by sha256, one fp32 execution) against copying the package."""
    import shutil

    from kiln.foundation.fsutil import remove_path
    from kiln.compile.stage import compile_component

    copy_to, bundle = work / "copy.mlpackage", work / "encoder.mlmodelc"
    copies = []
    for _ in range(REPEATS):
        remove_path(copy_to)
        started = time.perf_counter()
        shutil.copytree(package, copy_to)
        copies.append(time.perf_counter() - started)
    remove_path(copy_to)
    started = time.perf_counter()
    record = compile_component(package, bundle, {"compiler": "kiln", "dialect": "1.0"}, check_inputs=inputs)
    job = time.perf_counter() - started
    copy_s = statistics.median(copies)
    from kiln.compile.compare import compare_bundle_to_package

    started = time.perf_counter()
    assert compare_bundle_to_package(package, bundle) == []
    structure = time.perf_counter() - started
    return {"copy_s": round(copy_s, 3), "job_s": round(job, 3), "compile_s": record["seconds"],
            "structural_check_s": round(structure, 3), "round_trip": record["round_trip"],
            "vs_copy": round(job / copy_s, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architecture", default="full", choices=["full", "tiny"])
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved speed rounds (default %(default)s)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    return emit(run(args.architecture, args.workdir, args.rounds), args.out)


if __name__ == "__main__":
    raise SystemExit(main())
