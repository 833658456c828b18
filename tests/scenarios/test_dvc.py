"""The DVC scenario: build, push, fresh clone, pull -> nothing to do; edit one setting -> only its jobs."""

from __future__ import annotations

import pytest

from tests.helpers.workspaces import Workspace

pytestmark = pytest.mark.slow

# Jobs downstream of one component's export settings (grows with the pipeline's stages).
DOWNSTREAM_OF_EXPORT = {("export", "unified_256ms"), ("compile", "unified_256ms"),
                        ("parity", "unified_256ms"), ("metadata", None),
                        ("quantize", "unified_256ms"), ("quantization_summary", None),
                        ("quantization_plot", "unified"), ("quantization_plot", "unified_256ms"),
                        ("end_to_end", None), ("contract", None)}
AGGREGATES = {"all"}


def test_fresh_clone_pull_plans_nothing_and_edits_plan_only_downstream(built_silero_workspace, tmp_path):
    origin = built_silero_workspace   # `snakemake --cores 2 all` done (the run's one build of it, copied here)
    assert origin.planned_jobs() == []
    origin.dvc("commit", "-f")
    import yaml
    from tests.workflow.test_dvc_lock import lock_mismatches
    assert lock_mismatches(yaml.safe_load((origin.root / "dvc.lock").read_text()),
                           yaml.safe_load((origin.root / "dvc.yaml").read_text())) == []
    assert (origin.root / "results/.kiln-ledger.json").is_file()  # versioned with the results
    origin.git("add", "dvc.lock")
    origin.git("commit", "-q", "-m", "built artifacts")
    origin.dvc("push")
    assert (tmp_path / "kiln-dvc-remote").is_dir()  # the default remote: a folder beside the checkout

    origin.git("clone", "-q", str(origin.root), str(tmp_path / "clone"))
    clone = Workspace(tmp_path / "clone")
    assert not (clone.root / "results").exists()
    clone.dvc("pull")
    assert (clone.root / "results/silero_vad/unified.mlpackage/Manifest.json").is_file()
    # the resolved contracts every job after prepare binds to are versioned with the results
    contracts = "results/silero_vad/prepared/contracts.json"
    assert (clone.root / contracts).read_bytes() == (origin.root / contracts).read_bytes()
    assert clone.planned_jobs() == []
    assert clone.dvc("status").stdout.strip().endswith("Data and pipelines are up to date.")

    clone.edit_config(lambda c: c["models"]["silero_vad"]["components"]["unified_256ms"].update(
        {"export": {"compute_precision": "float32"}}))
    jobs = clone.planned_jobs()
    work = {(rule, wc.get("component")) for rule, wc in jobs if rule not in AGGREGATES}
    assert work == DOWNSTREAM_OF_EXPORT

    clone.snakemake("--cores", "2", "all")
    assert clone.planned_jobs() == []
