"""The Snakemake workflow end to end: bad config, killed jobs, corrupt checkpoints, incremental plans."""

from __future__ import annotations

import hashlib
import shutil

import pytest

pytestmark = pytest.mark.slow


def test_invalid_config_stops_before_any_job(workspace):
    workspace.edit_config(lambda c: c["models"]["silero_vad"]["components"]["unified"].update(
        {"export": {"compute_precision": "float8"}}))
    result = workspace.snakemake("--cores", "1", check=False)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "models.silero_vad.components.unified.export.compute_precision" in message
    assert "'float8' is not one of" in message
    assert not (workspace.root / "results").exists()
    assert not (workspace.root / "logs").exists()


def test_killed_export_is_rebuilt_and_never_taken_as_done(workspace):
    target = "results/silero_vad/unified.mlpackage"
    killed = workspace.snakemake("--cores", "1", target, check=False,
                                 env={"KILN_FAILPOINT": "export.save:kill"})
    assert killed.returncode != 0
    results = workspace.root / "results" / "silero_vad"
    assert not (results / "unified.mlpackage").exists()
    assert not (results / "export" / "unified.json").exists()
    # a rerun plans the export again and cleans the dead writer's temporaries
    assert ("export", {"model": "silero_vad", "component": "unified"}) in workspace.planned_jobs(target)
    workspace.snakemake("--cores", "1", target)
    assert (results / "unified.mlpackage" / "Data" / "com.apple.CoreML" / "model.mlmodel").is_file()
    assert not list(results.glob(".unified.mlpackage.*"))


def test_corrupt_checkpoint_fails_naming_the_file(workspace, silero_record):
    ckpt = workspace.root / "weights" / "silero_vad.jit"
    ckpt.parent.mkdir()
    shutil.copy(silero_record.files[0].path, ckpt)
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    workspace.edit_config(lambda c: c["models"]["silero_vad"].update(
        {"source": {"kind": "path", "path": "weights/silero_vad.jit", "sha256": digest, "version": "6.0.0"}}))
    workspace.snakemake("--cores", "1", "results/silero_vad/source.json")
    ckpt.write_bytes(ckpt.read_bytes()[:-100] + b"\0" * 100)
    result = workspace.snakemake("--cores", "1", "results/silero_vad/unified.mlpackage", check=False)
    assert result.returncode != 0
    # the prepare job is the one that loads the checkpoint
    log = (workspace.root / "logs" / "silero_vad" / "prepare.log").read_text()
    assert "weights/silero_vad.jit" in log and "corrupt or changed" in log
    assert not (workspace.root / "results" / "silero_vad" / "unified.mlpackage").exists()


def test_build_then_nothing_to_do_then_only_the_edited_component(built_silero_workspace):
    workspace = built_silero_workspace   # `snakemake --cores 2 all` done (the run's one build of it, copied here)
    assert workspace.planned_jobs() == []
    # tolerances only re-validate: the package is not rebuilt
    workspace.edit_config(lambda c: c["models"]["silero_vad"]["components"]["unified_256ms"].update(
        {"validate": {"atol": 0.01}}))
    assert sorted(r for r, _ in workspace.planned_jobs()) == ["all", "metadata", "parity"]
    workspace.snakemake("--cores", "2", "all")
    workspace.edit_config(lambda c: c["models"]["silero_vad"]["components"]["unified"].update(
        {"export": {"compute_precision": "float32"}}))
    jobs = workspace.planned_jobs()
    work = sorted((rule, wc.get("component") or "") for rule, wc in jobs if rule not in {"all"})
    assert work == [("compile", "unified"), ("contract", ""), ("end_to_end", ""), ("export", "unified"),
                    ("metadata", ""), ("parity", "unified"), ("quantization_plot", "unified"),
                    ("quantization_plot", "unified_256ms"), ("quantization_summary", ""), ("quantize", "unified")]
    # Snakemake's directory markers are not left inside the shipped bundles
    assert not list((workspace.root / "results").glob("**/.snakemake_timestamp"))
    # and the metadata written by the workflow satisfies its schema
    import json
    from kiln.validate.metadata import validate_metadata
    validate_metadata(json.loads((workspace.root / "results/silero_vad/metadata.json").read_text()))
    from kiln.quantize.summary import validate_summary
    summary = json.loads((workspace.root / "results/silero_vad/quantization_summary.json").read_text())
    validate_summary(summary)
    assert {(r["strategy"], r["component"], r["status"]) for r in summary["results"]} == {
        ("int8_per_channel", "unified", "ok"), ("int8_per_channel", "unified_256ms", "ok")}
    assert (workspace.root / "results/silero_vad/quantized/int8_per_channel/unified.mlmodelc/model.mil").is_file()
