"""Cost of `compile_package` against a plain copy of the same package (`shutil.copytree`).

    python -m kiln.compile.benchmark X.mlpackage [Y.mlpackage ...] [--repeats 20]

Prints one JSON object per package: best and median seconds of each, and their ratio. Import
time of coremltools (paid once per process) is reported separately.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _timed(action, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return times


def benchmark_package(package: str | Path, repeats: int = 20) -> dict:
    from kiln.compile.compiler import compile_package

    package = Path(package)
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as scratch:
        scratch = Path(scratch)
        counter = iter(range(10 ** 9))

        def copy():
            shutil.copytree(package, scratch / f"copy{next(counter)}.mlpackage", symlinks=False)

        def compile_once():
            compile_package(package, scratch / f"out{next(counter)}.mlmodelc")

        compile_once()  # warm caches (file system, lazily built tables) for both sides
        copy()
        copy_times = _timed(copy, repeats)
        compile_times = _timed(compile_once, repeats)
    return {
        "package": str(package),
        "copytree_best_s": min(copy_times),
        "copytree_median_s": statistics.median(copy_times),
        "compile_best_s": min(compile_times),
        "compile_median_s": statistics.median(compile_times),
        "ratio_median": statistics.median(compile_times) / statistics.median(copy_times),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="+")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    import kiln.compile.compiler  # noqa: F401  (pulls in coremltools)

    print(json.dumps({"import_s": time.perf_counter() - start}))
    for package in args.packages:
        print(json.dumps(benchmark_package(package, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
