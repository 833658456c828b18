"""The synthetic Parakeet EOU entry builds offline through the whole workflow in a separate
Snakemake process: metadata.json records the encoder output and every cache chunk by chunk, the
greedy token stream and where <EOU> fires on torch and kiln's executor, the per-chunk error and
token/EOU timeline plots, NeMo's streaming-vs-offline check and NeMo's own session from chunk 0; the quantization summary holds the
EOU timing per strategy and its recommendation."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

MODEL = "parakeet_eou_tiny"


def test_tiny_eou_metadata_records_streaming_parity_and_eou_timing(tiny_streaming_and_tts):
    """Built by the shared fixture (tests/helpers/workspaces.py): 320 ms components, one strategy."""
    results = tiny_streaming_and_tts.root / "results" / MODEL
    metadata = json.loads((results / "metadata.json").read_text())
    from kiln.validate.metadata import validate_metadata

    validate_metadata(metadata)
    assert metadata["synthetic"] and metadata["source"]["kind"] == "random"
    assert set(metadata["components"]) == {"preprocessor", "streaming_encoder", "decoder", "joint_decision"}
    for name, component in metadata["components"].items():
        assert component["validation"]["passed"], (name, component["validation"]["failures"])
    encoder = metadata["components"]["streaming_encoder"]
    # every cache after every chunk, per executor mode
    outputs = {e["output"] for e in encoder["parity"] if e["backend"] == "kiln_fp16"}
    assert outputs == {"encoded_output", "encoded_length", "new_pre_cache", "new_cache_last_channel",
                       "new_cache_last_time", "new_cache_last_channel_len"}
    chunks = encoder["validation"]["steps"]
    for mode in ("kiln_fp32", "kiln_fp16"):
        per_chunk = encoder["task_metrics"][mode]
        assert per_chunk["chunks"] == chunks >= 20
        for name in ("encoded_output", "new_pre_cache", "new_cache_last_channel", "new_cache_last_time"):
            errors = per_chunk[f"{name}_max_abs_per_chunk"]
            assert len(errors) == chunks and max(errors) < (1e-2 if mode == "kiln_fp32" else 5e-2), (mode, name)
        assert per_chunk["cache_last_channel_len_agreement"] == 1.0
    # the prepare job writes every contract resolved from the facts and chunk_ms (the family's
    # symbolic contracts) to contracts.json, in the spec's tensor order: what the unit tests bind to
    from kiln.config import load_config
    from tests.conftest import RESOLVED_CONTRACTS

    prepared = json.loads((results / "prepared" / "contracts.json").read_text())["contracts"]
    config = load_config(tiny_streaming_and_tts.root / "config.yaml").model(MODEL)
    assert set(prepared) == set(config.components)
    recorded = json.loads(RESOLVED_CONTRACTS.read_text())[MODEL]   # (this workspace trims the 160 ms pair)
    assert json.dumps(prepared) == json.dumps({c: recorded[c] for c in prepared})
    assert "contracts" not in json.loads((results / "prepared" / "prepare.json").read_text())   # one place
    plots = [p.split("/")[-1] for p in encoder["plots"]]
    assert "streaming_encoder_chunk_errors.png" in plots
    # greedy token stream and the chunk where <EOU> fires, torch vs kiln
    e2e = metadata["end_to_end"]
    torch_run = e2e["backends"]["torch_cpu"]["by_chunk_size"]["streaming_encoder"]
    assert torch_run["tokens"] and torch_run["eou_chunks"], "the calibrated tiny model must emit <EOU>"
    assert torch_run["chunks"] == chunks and len(torch_run["tokens_per_chunk"]) == chunks
    # the packages hold fp16 weights: random weights put logits within fp16 rounding of each other,
    # so a few tokens flip and shift the stream (measured: edit distance 10 of 115 tokens in fp32
    # mode, every <EOU> chunk identical; 24 in fp16 mode, where the fp16 decoder and joint add three
    # <EOU> chunks, 24, 25 and 29, to the nine of the reference); no reference <EOU> may move
    for mode in ("kiln_fp32", "kiln_fp16"):
        timing = e2e["backends"][mode]["streaming_encoder"]
        assert timing["eou_chunks_reference"] == sorted(set(torch_run["eou_chunks"])), mode
        assert set(timing["eou_chunks_reference"]) <= set(timing["eou_chunks"]), (mode, timing)
        assert timing["first_eou_same_chunk"] and timing["eou_chunk_agreement"] >= 0.7, (mode, timing)
        assert timing["tokens"]["edit_distance"] <= 0.25 * len(torch_run["tokens"]), (mode, timing["tokens"])
    assert e2e["backends"]["kiln_fp32"]["streaming_encoder"]["eou_chunk_agreement"] == 1.0
    assert [p.split("/")[-1] for p in e2e["plots"]] == ["end_to_end_token_timeline.png"]
    for plot in (results / "plots" / "end_to_end_token_timeline.png", results / "plots" / "streaming_encoder_chunk_errors.png"):
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # streaming equals NeMo's own cache-aware step, its offline encoder and a session as NeMo runs
    # it (tokens and <EOU> of every chunk), from the first chunk on
    faithful = metadata["prepare"]["faithfulness"]["streaming_encoder"]
    assert faithful["vs_nemo_streaming_match"] and max(faithful["vs_nemo_streaming_max_abs"].values()) <= 1e-4
    assert faithful["offline"]["match"] and faithful["offline"]["greedy_tokens"] > 0
    session = faithful["session"]
    assert session["match"] and session["first_differing_chunk"] is None and session["eou_chunks"]
    assert session["eou_chunks"] == session["eou_chunks_nemo"] and session["encoder_max_abs"] <= 1e-4
    # quantization: EOU timing per strategy, judged against the float packages
    summary = json.loads((results / "quantization_summary.json").read_text())
    timing = summary["task"]["components"]["streaming_encoder"]
    entry = timing["strategies"]["int8_per_channel"]
    assert entry["eou_chunks_reference"] and isinstance(entry["eou_degraded"], bool)
    assert entry["eou_degraded"] == (entry["eou_chunk_agreement"] < 1.0 or not entry["first_eou_same_chunk"])
    expected = "fp16 only" if entry["eou_degraded"] else "no measured strategy moves"
    assert timing["recommendation"].startswith(expected), timing["recommendation"]
