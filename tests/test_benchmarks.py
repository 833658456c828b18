"""`make bench` keeps working: its quick benchmarks run as the Makefile runs them, in a separate
process, from a directory holding no build results (a fresh clone has none: the export benchmark once
read the prepare record from ./results and failed there)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_quick_benchmarks_run_without_build_results(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"),
                           "--only", "silero_export,executor_vs_torch", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "results").exists()  # the benchmarks build in their own temporary folders

    results = json.loads(out.read_text())["benchmarks"]
    export = results["silero_export"]
    assert export["synthetic"] is False  # Silero's real weights, from the silero-vad package
    assert export["prepare"]["source_loads"] == 1
    assert set(export["export"]) == {"unified", "unified_256ms"}
    for component in export["export"].values():
        assert component["package_bytes"] > 100_000 and component["peak_rss_mib"] > 0

    executor = results["executor_vs_torch"]
    assert executor["chunks"] == 1000
    for key in ("torch_eager_1_threads_ms_per_chunk", "kiln_fp32_ms_per_chunk", "kiln_fp16_ms_per_chunk"):
        assert executor[key] > 0
    profile = executor["profile_one_call_us"]["fp32"]
    assert profile["fused_steps"] < profile["unfused_steps"]


def test_every_benchmark_and_its_child_scripts_import_what_exists():
    """The long benchmarks (full-size models, minutes to hours) are not run by the test suite, so a
    renamed kiln function would break them unseen (bench_kokoro's child scripts imported
    ``kiln.models.kokoro.build_random`` after the family became a package). Every benchmark module
    imports, and every ``from kiln… import …`` line of the scripts it runs in child processes
    resolves, in a separate process."""
    import ast

    lines = []
    for path in sorted((REPO / "benchmarks").glob("*.py")):
        lines.append(f"import {path.stem}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "from kiln" in node.value:
                lines += [line.strip() for line in node.value.splitlines()
                          if line.strip().startswith(("from kiln", "import kiln"))]
    assert any("kokoro.checkpoint import build_random" in line for line in lines)
    proc = subprocess.run([sys.executable, "-c", "\n".join(lines)], cwd=REPO / "benchmarks",
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
