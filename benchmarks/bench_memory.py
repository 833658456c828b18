"""Measure the constants of kiln.workflow.limits.estimate_peak_mb (peak RSS of a job process):

* base: a process that imported torch, coremltools and kiln's executor;
* per source byte: torch.load(weights_only=True) of a checkpoint, peak RSS growth / file size;
* per contract byte: kiln's executor running the Parakeet (tiny, random) preprocessor exported at
  several window lengths, peak RSS growth / (input + output bytes).

    python benchmarks/bench_memory.py [--out benchmarks/memory.json]

Each measurement runs in a fresh subprocess (ru_maxrss is a high-water mark)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

PEAK = "import resource; print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"


def _peak_mb(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code + "\n" + PEAK], capture_output=True, text=True, check=True)
    line = next(l for l in out.stdout.splitlines() if l.startswith("PEAK_KB"))
    return int(line.split()[1]) / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import numpy as np
    import torch

    work = Path(tempfile.mkdtemp(prefix="kiln-mem-"))
    imports = "import torch, coremltools, kiln.mil, numpy as np"
    base = _peak_mb(imports)

    checkpoint = work / "weights.pt"
    torch.save({f"w{i}": torch.randn(1024, 1024) for i in range(100)}, checkpoint)  # 400 MiB
    size_mb = checkpoint.stat().st_size / 2**20
    loaded = _peak_mb(imports + f"\nsd = torch.load({str(checkpoint)!r}, weights_only=True)")
    source_factor = (loaded - base) / size_mb

    from kiln.config import build_config
    from kiln.export.convert import export_component
    from kiln.models.parakeet_tdt import FAMILY
    from kiln.models.parakeet_tdt.build import config_blocks, load_path

    nemo = FAMILY.build_random("tiny", seed=0, overrides={}, out_dir=work / "src")
    source = load_path(nemo)
    points = []
    for samples in (240_000, 960_000, 3_840_000):
        contract = config_blocks(FAMILY.facts(source), samples // 16_000)["preprocessor"]
        config = build_config({"models": {"m": {"family": "parakeet_tdt", "task": "stt",
                                                "source": {"kind": "random", "architecture": "tiny", "seed": 0},
                                                "components": {"preprocessor": contract}}}},
                              path=str(work / "config.yaml"))
        component = config.component("m", "preprocessor")
        package = work / f"pre{samples}.mlpackage"
        export_component(FAMILY, source, component, package)
        contract_mb = sum(int(np.prod(t.shape)) * 4 for t in (*component.inputs, *component.outputs)) / 2**20
        run = (imports + f"\nm = kiln.mil.load_model({str(package)!r})"
               f"\nx = {{'audio_signal': np.random.default_rng(0).standard_normal((1, {samples})).astype(np.float32),"
               f" 'audio_length': np.array([{samples}], np.int32)}}\nm.predict(x)")
        points.append({"samples": samples, "contract_mb": round(contract_mb, 2), "peak_mb": round(_peak_mb(run), 1)})
    xs = np.array([p["contract_mb"] for p in points])
    ys = np.array([p["peak_mb"] for p in points])
    slope = float(np.polyfit(xs, ys, 1)[0])
    result = {"base_mb": round(base, 1), "source_mb": round(size_mb, 1), "source_loaded_peak_mb": round(loaded, 1),
              "source_factor": round(source_factor, 3), "preprocessor_points": points,
              "tensor_factor": round(slope, 2)}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
