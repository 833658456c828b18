"""Each quantization strategy on its own, the sanity checks, named skips, the summary and its schema."""

from __future__ import annotations

import json

import pytest

from kiln.export.convert import export_component
from kiln.models import get_family
from kiln.quantize.run import Skip, compress, program_op_types, weight_bytes
from kiln.quantize.strategies import STRATEGIES, QuantizeContext, needs_target
from kiln.quantize.summary import SummaryError, build_summary, pareto_front, validate_summary


@pytest.fixture(scope="module")
def unified(tmp_path_factory, kiln_config, silero_net):
    comp = kiln_config.component("silero_vad", "unified")
    out = tmp_path_factory.mktemp("base") / "unified.mlpackage"
    export_component(get_family("silero_vad"), silero_net, comp, out)
    return comp, out


@pytest.fixture(scope="module")
def unified_ios18(tmp_path_factory, kiln_config, silero_net):
    """The iOS18 re-export the workflow's export_ios18 rule makes for the strategies that need it."""
    from kiln.workflow.plan import ios18_component

    comp = ios18_component(kiln_config.component("silero_vad", "unified"))
    out = tmp_path_factory.mktemp("base18") / "unified.mlpackage"
    export_component(get_family("silero_vad"), silero_net, comp, out)
    return out


def test_schema_enum_is_the_registry(repo):
    schema = json.loads((repo / "src/kiln/schemas/config.schema.json").read_text())
    assert set(schema["$defs"]["strategy_name"]["enum"]) == set(STRATEGIES)
    from kiln.config import strategy_names

    assert set(strategy_names()) == set(STRATEGIES)   # what the Snakefile constrains {strategy} to


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategy_compresses_with_its_constexpr_ops(name, unified, unified_ios18, tmp_path):
    comp, base = unified
    if needs_target(name, "iOS17") == "iOS18":
        base = unified_ios18
    strategy = STRATEGIES[name]
    out = tmp_path / "q.mlpackage"
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in base.rglob("*") if p.is_file()}
    details = compress(name, base, comp, QuantizeContext(), out)
    # the base package is an input of other jobs: compressing must not touch it (bytes or mtimes)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in base.rglob("*") if p.is_file()} == before
    assert details["deployment_target"] == needs_target(name, "iOS17")
    assert details["specification_version"] == {"iOS17": 8, "iOS18": 9}[details["deployment_target"]]
    assert any(op in details["constexpr_ops"] for op in strategy.expected_ops)
    assert weight_bytes(out) < weight_bytes(base)


def test_iOS18_modes_reexport_at_iOS18():
    assert needs_target("int4_per_block", "iOS17") == "iOS18"
    assert needs_target("int8_per_channel", "iOS15") == "iOS16"  # coremltools would raise it silently
    assert needs_target("int8_per_channel", "iOS17") == "iOS17"


def test_nothing_above_the_threshold_is_a_named_skip(unified, tmp_path):
    comp, base = unified
    with pytest.raises(Skip, match="weight_threshold=100000000"):
        compress("int8_per_channel", base, comp, QuantizeContext(weight_threshold=100_000_000), tmp_path / "q.mlpackage")
    assert not (tmp_path / "q.mlpackage").exists()


def test_skip_ops_keep_float_weights(unified, tmp_path):
    comp, base = unified
    out = tmp_path / "q.mlpackage"
    compress("int8_per_channel", base, comp, QuantizeContext(skip_ops=("conv",)), out)
    import coremltools as ct

    spec = ct.models.MLModel(str(out), skip_model_load=True).get_spec()
    main = spec.mlProgram.functions["main"]
    block = next(iter(main.block_specializations.values()))
    producers = {o.outputs[0].name: o.type for o in block.operations if o.outputs}
    convs = [op for op in block.operations if op.type == "conv"]
    assert convs
    assert {producers[op.inputs["weight"].arguments[0].name] for op in convs} == {"const"}
    assert "constexpr_affine_dequantize" in program_op_types(spec)  # the LSTM's matmuls still are


def test_pareto_front():
    points = [(0.5, 0.95, "int8"), (0.4, 0.82, "p6"), (0.52, 0.97, "p8"), (0.56, 0.57, "int4"), (0.28, 0.3, "p4")]
    assert pareto_front(points) == {"int8", "p6", "p8", "p4"}


def test_summary_schema_requires_a_reason_for_skips():
    skipped = {"strategy": "int8_per_channel", "description": "d", "component": "c", "baseline_bytes": 10,
               "status": "skipped", "skip_reason": "no weight above the threshold"}
    summary = build_summary("m", False, [skipped])
    validate_summary(summary)
    del summary["results"][0]["skip_reason"]
    with pytest.raises(SummaryError, match="skip_reason"):
        validate_summary(summary)


def test_a_variant_with_nan_outputs_is_recorded_and_never_pareto_optimal():
    """A palettized Parakeet preprocessor gave NaN (its log-mel filterbank): the record is valid
    (errors null, problem named, quality 0) and the variant, though the smallest, is not offered."""
    def ok(strategy, size_ratio, quality, output):
        return {"strategy": strategy, "description": "d", "component": "preprocessor", "baseline_bytes": 100,
                "status": "ok", "deployment_target": "iOS17", "specification_version": 8,
                "constexpr_ops": ["constexpr_lut_to_dense"],
                "package": {"path": "p", "sha256": "0" * 64, "size_bytes": 10},
                "bundle": {"path": "b", "sha256": "0" * 64, "size_bytes": 10},
                "size_ratio": size_ratio, "quality": quality, "normalized_error": output["normalized_error"],
                "outputs": {"mel": output}, "task_metrics": {}, "latency": {}}

    broken = ok("palettize_6bit", 0.25, 0.0, {"quality": 0.0, "normalized_error": None, "psnr_db": None,
                                              "max_abs": None, "problem": "non-finite values (NaN or inf)"})
    fine = ok("int8_per_channel", 0.5, 0.99, {"quality": 0.99, "normalized_error": 0.01, "psnr_db": 50.0,
                                              "max_abs": 0.02})
    summary = build_summary("m", True, [broken, fine])
    validate_summary(summary)
    assert {r["strategy"]: r["pareto_optimal"] for r in summary["results"]} == {
        "palettize_6bit": False, "int8_per_channel": True}


def _scored(strategy, size_ratio, quality, task=None, check=None):
    record = {"strategy": strategy, "description": "d", "component": "unified", "baseline_bytes": 100,
              "status": "ok", "deployment_target": "iOS17", "specification_version": 8,
              "constexpr_ops": ["constexpr_affine_dequantize"],
              "package": {"path": "p", "sha256": "0" * 64, "size_bytes": 10},
              "bundle": {"path": "b", "sha256": "0" * 64, "size_bytes": 10},
              "size_ratio": size_ratio, "quality": quality, "normalized_error": 1 - quality,
              "outputs": {"vad_output": {"quality": quality, "normalized_error": 1 - quality, "psnr_db": 30.0,
                                         "max_abs": 0.1}},
              "task_metrics": {} if task is None else {"decision_agreement": task}, "latency": {}}
    if task is not None:
        record["task_score"] = {"metric": "decision_agreement", "value": task}
    if check is not None:
        record["dequantized_torch"] = check
    return record


def test_variants_rank_by_the_task_metric_where_the_family_has_one():
    """Silero's figures (silero-vad 6.2.3 ONNX graph): by quality palettize_4bit would rank last,
    by what an app sees (decision agreement) it is the best; int8_per_tensor is last either way."""
    from kiln.distribution.report import quantization_page

    equal = {"verdict": "equal", "compressed_weights": 7, "torch_tensors_replaced": ["w"], "seconds": 1.0,
             "outputs": {"vad_output": {"max_abs": 3e-6, "match": True, "atol": 0.02, "rtol": 0.0}}}
    records = [_scored("int8_per_tensor", 0.52, 0.0, 0.2576, equal), _scored("prune_50_int8", 0.49, 0.77, 0.9808, equal),
               _scored("palettize_4bit", 0.29, 0.30, 0.9856, equal),
               {"strategy": "int4_per_block", "description": "d", "component": "unified", "baseline_bytes": 100,
                "status": "skipped", "skip_reason": "no weight above the threshold"}]
    summary = build_summary("silero_vad_onnx", False, records)
    validate_summary(summary)
    assert summary["rankings"] == {"unified": {"by": "decision_agreement",
                                               "order": ["palettize_4bit", "prune_50_int8", "int8_per_tensor"]}}
    assert [(r["strategy"], r.get("rank")) for r in summary["results"]] == [
        ("palettize_4bit", 1), ("prune_50_int8", 2), ("int8_per_tensor", 3), ("int4_per_block", None)]
    page = quantization_page(summary)
    assert "by decision_agreement: palettize_4bit, prune_50_int8, int8_per_tensor" in page
    assert "decision_agreement 0.2576" in page and "equal (3e-06)" in page
    # a variant without the task metric: the component ranks by quality
    summary = build_summary("m", False, [_scored("a", 0.5, 0.9, 0.9), _scored("b", 0.5, 0.95)])
    assert summary["rankings"]["unified"] == {"by": "quality", "order": ["b", "a"]}


def test_summary_schema_checks_the_dequantized_torch_record():
    different = {"verdict": "different", "compressed_weights": 7, "torch_tensors_replaced": ["w"], "seconds": 1.0}
    summary = build_summary("m", False, [_scored("a", 0.5, 0.9, 0.9, different)])
    with pytest.raises(SummaryError, match="outputs"):   # a verdict from comparing nothing
        validate_summary(summary)
    unchecked = {**different, "verdict": "not_checked", "reason": "no tensor equals w"}
    validate_summary(build_summary("m", False, [_scored("a", 0.5, 0.9, 0.9, unchecked)]))
    with pytest.raises(SummaryError, match="dequantized_torch"):   # an unknown verdict
        validate_summary(build_summary("m", False, [_scored("a", 0.5, 0.9, 0.9, {**unchecked, "verdict": "ok"})]))
