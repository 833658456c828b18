"""A scaffolded model builds through every stage of the workflow, as the docs promise."""

from __future__ import annotations

import json

import pytest

from tests.helpers.workspaces import VENV_BIN, parse_dry_run

pytestmark = pytest.mark.slow


def test_scaffolded_vad_builds_every_stage(workspace):
    workspace.run(str(VENV_BIN / "kiln"), "new-model", "vad", "my_vad")
    # the workspace's own src/ (where the scaffold wrote the family) is what the jobs import
    env = {"PYTHONPATH": str(workspace.root / "src")}
    workspace.snakemake("--cores", "2", "all_my_vad", env=env)
    results = workspace.root / "results" / "my_vad"
    metadata = json.loads((results / "metadata.json").read_text())
    assert metadata["synthetic"] and metadata["prepare"]["source_loads"] == 1
    frame = metadata["components"]["frame"]
    assert frame["validation"]["passed"], frame["validation"]["failures"]
    assert frame["validation"]["steps"] > 100          # 10 s of speech, state carried step to step
    assert frame["task_metrics"]["kiln_fp32"]["decision_agreement"] >= 0.99
    summary = json.loads((results / "quantization_summary.json").read_text())
    assert [(r["strategy"], r["status"]) for r in summary["results"]] == [("int8_per_channel", "ok")]
    assert parse_dry_run(workspace.snakemake("-n", "all_my_vad", env=env).stdout) == []
