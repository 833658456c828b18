"""kiln's compiler vs a plain copy of the package's files, in one run (median of repeated runs)."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

from common import REPO

REPEATS = 15


def _median(fn) -> float:
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def measure(package: Path, workdir: Path) -> dict:
    from kiln.compile import compile_package
    from kiln.foundation.fsutil import remove_path, tree_size

    copy_to, bundle = workdir / "copy.mlpackage", workdir / "out.mlmodelc"

    def copy():
        remove_path(copy_to)
        shutil.copytree(package, copy_to)

    compile_package(package, bundle)  # warm-up: imports and caches
    copy_ms = _median(copy)
    compile_ms = _median(lambda: compile_package(package, bundle))
    return {"package_bytes": tree_size(package), "copy_ms": round(copy_ms, 3),
            "compile_ms": round(compile_ms, 3), "ratio": round(compile_ms / copy_ms, 2)}


def run(extra_packages: list[Path] | None = None) -> dict:
    from kiln.config import load_config
    from kiln.export.convert import export_component
    from kiln.models import get_family
    from kiln.sources import fetch

    config = load_config(REPO / "config.yaml")
    family = get_family("silero_vad")
    out = {"goal_ratio_max": 2.0, "packages": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        net = family.load(fetch("silero_vad", "silero_vad", config.model("silero_vad").source, tmp))
        # config.yaml states only the knobs: the entry bound to its contract resolved from the facts
        # (what the prepare job writes and every later job binds to)
        from kiln.workflow.jobs import resolved_contracts

        config = config.bound("silero_vad", resolved_contracts(config, "silero_vad", family.facts(net)))
        packages = {}
        for name in config.model("silero_vad").components:
            package = tmp / f"{name}.mlpackage"
            export_component(family, net, config.component("silero_vad", name), package)
            packages[f"silero_vad/{name}"] = package
        golden = REPO.parent / "shared" / "golden" / "silero-vad-coreml-v6.0.0"
        for variant in ("unified", "unified_int8", "unified_palette_6bit"):
            if (golden / variant / "input.mlpackage").is_dir():
                packages[f"golden/{variant}"] = golden / variant / "input.mlpackage"
        # the largest packages the workflow has built in this checkout (e.g. the Parakeet encoders)
        built = sorted((REPO / "results").glob("*/*.mlpackage"), key=lambda p: -sum(
            f.stat().st_size for f in p.rglob("*") if f.is_file()))
        for extra in list(extra_packages or []) + built[:3]:
            packages[str(Path(extra).relative_to(REPO) if Path(extra).is_relative_to(REPO) else extra)] = Path(extra)
        for name, package in packages.items():
            work = tmp / "work" / name.replace("/", "_")
            work.mkdir(parents=True)
            out["packages"][name] = measure(package, work)
    return out
