"""No-op overhead: `snakemake -n all` with everything built, vs a one-rule Snakefile's dry run.

Runs in the checkout itself: `snakemake all` first (a no-op when everything is already built), then
the dry runs, so the DAG measured is the real one (every model, stage and quantization variant).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from common import REPO, VENV_BIN, median_time

ONE_RULE = """
rule one:
    output: "one.txt"
    shell: "echo 1 > {output}"
"""


def run(repeats: int = 5) -> dict:
    snakemake = str(VENV_BIN / "snakemake")
    median_time([snakemake, "--cores", "2", "all"], REPO, 1)  # everything built
    kiln = median_time([snakemake, "-n", "all"], REPO, repeats)
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
