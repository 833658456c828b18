"""No-op overhead: `snakemake -n all` with everything built, vs a one-rule Snakefile's dry run.

Measured in a workspace where `all` is already built (bench_quantize leaves one: Silero VAD, every
stage and quantization variant), so the DAG is the real one.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from common import VENV_BIN, median_time

ONE_RULE = """
rule one:
    output: "one.txt"
    shell: "echo 1 > {output}"
"""


def measure(workspace: Path, repeats: int = 5) -> dict:
    snakemake = str(VENV_BIN / "snakemake")
    kiln = median_time([snakemake, "-n", "all"], workspace, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        baseline_dir = Path(tmp)
        (baseline_dir / "Snakefile").write_text(ONE_RULE)
        (baseline_dir / "one.txt").write_text("1\n")
        baseline = median_time([snakemake, "-n"], baseline_dir, repeats)
    return {
        "kiln_dry_run": kiln,
        "one_rule_dry_run": baseline,
        "ratio": round(kiln["median_s"] / baseline["median_s"], 3),
        "goal_ratio_max": 1.5,
    }
