"""No-op overhead: `snakemake -n all` with everything built, vs a one-rule Snakefile's dry run."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from common import VENV_BIN, copy_workflow, median_time

ONE_RULE = """
rule one:
    output: "one.txt"
    shell: "echo 1 > {output}"
"""


def run(repeats: int = 5) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        ws = copy_workflow(Path(tmp) / "kiln")
        snakemake = str(VENV_BIN / "snakemake")
        median_time([snakemake, "--cores", "2", "all"], ws, 1)  # build everything once
        kiln = median_time([snakemake, "-n", "all"], ws, repeats)
        baseline_dir = Path(tmp) / "one"
        baseline_dir.mkdir()
        (baseline_dir / "Snakefile").write_text(ONE_RULE)
        (baseline_dir / "one.txt").write_text("1\n")
        baseline = median_time([snakemake, "-n"], baseline_dir, repeats)
    return {
        "kiln_dry_run": kiln,
        "one_rule_dry_run": baseline,
        "ratio": round(kiln["median_s"] / baseline["median_s"], 3),
        "goal_ratio_max": 1.5,
    }
