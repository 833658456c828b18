"""The quantize job's recorded check, run by Snakemake in its own process: for one strategy per
family (linear, palettized, pruned), kiln's execution of the variant equals torch running the
traced program with the variant's dequantized weights, and the summary ranks the variants by
Silero's decision agreement. On silero-vad 6.2.3's ONNX graph, int8_per_tensor scores quality 0
(decision agreement ~26%) and the check shows that is the quantization's, not the executor's."""

from __future__ import annotations

import json

from tests.helpers.workspaces import copy_built

STRATEGIES = ["int8_per_tensor", "palettize_4bit", "prune_50_int8"]


def test_quantized_variants_equal_torch_on_dequantized_weights_and_rank_by_decisions(small_built, tmp_path):
    # the run's one build of the small workspace (silero_vad_onnx's `unified` component, exported,
    # compiled and checked), copied here: the quantize settings edited, only quantize jobs rerun
    ws = copy_built(small_built, tmp_path / "kiln")

    def strategies(config):
        config["models"]["silero_vad_onnx"]["quantize"] = {"strategies": STRATEGIES}
    ws.edit_config(strategies)
    ws.git("commit", "-q", "-am", "silero_vad_onnx: three quantization strategies")
    ws.snakemake("--cores", "2", "results/silero_vad_onnx/quantization_summary.json")

    summary = json.loads((ws.root / "results/silero_vad_onnx/quantization_summary.json").read_text())
    from kiln.quantize.summary import validate_summary
    validate_summary(summary)
    results = {r["strategy"]: r for r in summary["results"]}
    assert set(results) == set(STRATEGIES)
    for strategy, r in results.items():
        check = r["dequantized_torch"]
        assert check["verdict"] == "equal", (strategy, check)
        assert check["compressed_weights"] >= 5
        # the whole network's weights, not only the compressed ones, are the package's
        assert "net.converted.node_conv1d_4.weight" in check["torch_tensors_replaced"]
        # far inside the parity tolerance: the executor computes what torch computes
        assert check["outputs"]["vad_output"]["max_abs"] < 1e-4, (strategy, check)
        assert r["task_score"]["metric"] == "decision_agreement"
        # the record of the job says the same as the summary
        record = json.loads((ws.root / f"results/silero_vad_onnx/quantized/{strategy}/unified.json").read_text())
        assert record["dequantized_torch"]["verdict"] == "equal"
    # the quantization destroys the per-tensor variant, the executor does not
    per_tensor = results["int8_per_tensor"]
    assert per_tensor["quality"] < 0.1 and per_tensor["task_metrics"]["decision_agreement"] < 0.5
    # ranked by decision agreement, best first; results listed in rank order
    ranking = summary["rankings"]["unified"]
    assert ranking["by"] == "decision_agreement"
    assert ranking["order"][-1] == "int8_per_tensor"
    agreements = [results[s]["task_metrics"]["decision_agreement"] for s in ranking["order"]]
    assert agreements == sorted(agreements, reverse=True)
    assert [r["strategy"] for r in summary["results"]] == ranking["order"]
    assert [results[s]["rank"] for s in ranking["order"]] == [1, 2, 3]
    # the report's table shows the rank, the task metric and the check
    table = (ws.root / "results/silero_vad_onnx/tables/quantization.html").read_text()
    assert "decision_agreement" in table and "kiln vs dequantized torch" in table
