"""`make bench`: run kiln's benchmarks and write their results as JSON.

    python benchmarks/run.py --out benchmarks/results.json [--only export,noop]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_compile  # noqa: E402
import bench_encoder  # noqa: E402
import bench_executor  # noqa: E402
import bench_export  # noqa: E402
import bench_fullsize  # noqa: E402
import bench_kokoro  # noqa: E402
import bench_noop  # noqa: E402
import bench_parakeet  # noqa: E402
import bench_parakeet_eou  # noqa: E402
import bench_quantize  # noqa: E402

BENCHMARKS = {
    "silero_export": bench_export.run,
    "executor_vs_torch": bench_executor.run,
    # full-size random Parakeet TDT v3 encoder, 15 s: time vs torch eager and peak RSS (issue 10)
    "executor_encoder_vs_torch": bench_encoder.run,
    "compile_vs_copy": bench_compile.run,
    "quantize_all_cores_and_noop_overhead": bench_quantize.run,
    # `snakemake -n all` on the default config's built DAG vs a one-rule Snakefile (issue 29: <= 1.3x)
    "noop": bench_noop.run,
    # the whole workflow of the full-size random Parakeet TDT v3 (issue 9's goals)
    "parakeet_tdt_v3_synthetic": bench_parakeet.run,
    "parakeet_eou_synthetic": bench_parakeet_eou.run,   # tiny + full-size random weights
    "kokoro_synthetic": bench_kokoro.run,               # full-size random weights, 5 s and 15 s
    # Parakeet TDT v3, Parakeet EOU, Kokoro: random full-size weights through `snakemake all_<model>`
    # with the real entries' settings, per-job seconds and peak RSS (issue 29: < 15 min, < 8 GiB per job)
    "fullsize_standins_workflow": bench_fullsize.run,
}


def machine() -> dict:
    from kiln.integrity.provenance import toolchain

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "toolchain": toolchain()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results.json")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    results = {"schema_version": 1, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": machine(), "benchmarks": {}}
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    failed = []
    for name in names:
        print(f"[bench] {name} …", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            results["benchmarks"][name] = BENCHMARKS[name]()
        except Exception as exc:  # one broken benchmark must not lose the others' figures
            failed.append(name)
            results["benchmarks"][name] = {"failed": True, "error": f"{type(exc).__name__}: {exc}"[-6000:]}
            print(f"[bench] {name} FAILED after {time.perf_counter() - started:.1f} s: {type(exc).__name__}: "
                  f"{str(exc)[-2000:]}", file=sys.stderr, flush=True)
            continue
        print(f"[bench] {name} done in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["benchmarks"], indent=2))
    if failed:
        print(f"[bench] {len(failed)} of {len(names)} failed: {', '.join(failed)} (see their \"error\" in "
              f"{args.out})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
