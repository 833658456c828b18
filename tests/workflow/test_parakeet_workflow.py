"""The synthetic Parakeet TDT v3 entry builds offline through the whole workflow, with token-level
parity between torch and the exported components on kiln's executor."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

MODEL = "parakeet_tdt_v3_tiny"


def test_tiny_parakeet_metadata_with_token_parity(workspace):
    workspace.snakemake("--cores", "2", f"results/{MODEL}/metadata.json")
    metadata = json.loads((workspace.root / f"results/{MODEL}/metadata.json").read_text())
    from kiln.validate.metadata import validate_metadata

    validate_metadata(metadata)
    assert metadata["synthetic"] and metadata["source"]["kind"] == "random"
    assert set(metadata["components"]) == {"preprocessor", "encoder", "mel_encoder", "decoder", "joint",
                                           "joint_decision", "joint_decision_single_step"}
    for name, component in metadata["components"].items():
        assert component["validation"]["passed"] or all(
            "(report-only)" in f for f in component["validation"]["failures"]), name
        assert component["compiled"]["round_trip"] == {"fp32": "identical", "fp16": "identical"}
    decoding = metadata["end_to_end"]["backends"]
    assert decoding["torch_cpu"]["tokens"], "greedy decoding emitted no tokens"
    assert decoding["kiln_fp32"]["vs_torch_cpu"]["exact_match"]
    assert decoding["kiln_fp32"]["durations_vs_torch_cpu"]["exact_match"]
    assert decoding["kiln_fp16"]["vs_torch_cpu"]["position_agreement"] >= 0.9
    # quantized variants of a Parakeet component are built and scored on the same validation inputs
    record = f"results/{MODEL}/quantized/int8_per_channel/decoder.json"
    workspace.snakemake("--cores", "2", record)
    scored = json.loads((workspace.root / record).read_text())
    assert scored["status"] == "ok" and scored["size_ratio"] < 1.0
    assert scored["task_metrics"] and 0.9 < scored["quality"] <= 1.0
    # package I/O follows the consuming runtime: int32 ids and lengths, fp32 audio
    contract = {t["name"]: t["dtype"] for t in metadata["components"]["decoder"]["inputs"]}
    assert contract["targets"] == "int32" and contract["h_in"] == "float32"
