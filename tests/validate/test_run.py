"""The validate stage on Silero VAD: real parity, typed failures, absent backends, schema."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from kiln.foundation.errors import ParityError
from kiln.validate.reference import ReferenceError
from kiln.export.convert import export_component
from kiln.models import get_family
from kiln.validate import backends as bk
from kiln.validate.reference import load_reference, make_reference, torch_context, write_reference
from kiln.validate.run import check_parity, parity_entries, validate_component


@pytest.fixture(scope="module")
def unified_package(tmp_path_factory, kiln_config, silero_net):
    out = tmp_path_factory.mktemp("pkg") / "unified.mlpackage"
    export_component(get_family("silero_vad"), silero_net, kiln_config.component("silero_vad", "unified"), out)
    return out


@pytest.fixture(scope="module")
def unified_reference(tmp_path_factory, kiln_config, silero_net):
    """Written and read back as the workflow's reference job and parity job do."""
    family, model = get_family("silero_vad"), kiln_config.model("silero_vad")
    comp = model.components["unified"]
    path = tmp_path_factory.mktemp("ref") / "unified.npz"
    write_reference(path, make_reference(torch_context(family, silero_net, model), comp))
    return load_reference(path, comp)


def test_reference_file_is_deterministic_and_checked_against_the_contract(unified_reference, kiln_config,
                                                                          tmp_path):
    comp = kiln_config.component("silero_vad", "unified")
    write_reference(tmp_path / "a.npz", unified_reference)
    write_reference(tmp_path / "b.npz", unified_reference)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert unified_reference.steps == 625 and set(unified_reference.initial) == {"hidden_state", "cell_state"}
    other = kiln_config.component("parakeet_tdt_v3_tiny", "decoder")
    with pytest.raises(ReferenceError, match="declares"):
        load_reference(tmp_path / "a.npz", other)
    (tmp_path / "c.npz").write_bytes((tmp_path / "a.npz").read_bytes()[:1000])
    with pytest.raises(ReferenceError, match="c.npz"):
        load_reference(tmp_path / "c.npz", comp)


def test_silero_unified_parity_and_decisions(kiln_config, unified_reference, unified_package, tmp_path):
    model = kiln_config.model("silero_vad")
    comp = kiln_config.component("silero_vad", "unified")
    spec = get_family("silero_vad").check_contract(comp)
    result = validate_component(spec, model, comp, {}, unified_reference, unified_package, tmp_path)
    assert result["validation"]["passed"], result["validation"]["failures"]
    assert result["validation"]["steps"] == 625  # 20 s of audio in 512-sample steps
    backends = {e["backend"] for e in result["parity"]}
    assert backends == {"kiln_fp32", "kiln_fp16"}
    for name in ("kiln_fp32", "kiln_fp16"):
        assert result["task_metrics"][name]["decision_agreement"] >= 0.99
    fp32 = next(e for e in result["parity"] if e["backend"] == "kiln_fp32" and e["output"] == "vad_output")
    assert fp32["max_abs"] < 5e-3 and fp32["precision"] == "fp32"
    # the Apple runtime does not exist on Linux: recorded as null with the reason, never a number
    for unit in comp.export.runtime_compute_units:
        assert result["latency"][f"coreml_{unit}"] is None
        assert "macOS" in result["absent_backends"][f"coreml_{unit}"]
    assert unified_reference.meta["torch_latency"]["calls"] == 625
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unified_fp16.png", "unified_latency.png", "unified_parity.png"]
    # the fp16 report: 3 sampled steps of 625, no op near fp16's range (Silero's largest activation
    # is ~190), every fp16 op's error recorded
    report = result["fp16_report"]
    assert report["steps"] == [0, 312, 624] and report["overflows"] == [] and report["near_range"] == []
    assert report["fp16_ops"] > 30 and 0 < report["max_error"] < 0.05 and report["error_growth"]


def test_mismatch_is_a_typed_error_naming_output_difference_and_tolerance(kiln_config):
    comp = kiln_config.component("silero_vad", "unified")
    ref = [{"vad_output": np.full((1, 1, 1), 0.5, np.float32),
            "new_hidden_state": np.zeros((1, 128), np.float32),
            "new_cell_state": np.zeros((1, 128), np.float32)}]
    bad = [{**ref[0], "vad_output": np.full((1, 1, 1), 0.6, np.float32)}]
    entries = parity_entries(comp, {"torch_cpu": ref, "kiln_fp16": bad}, "torch_cpu")
    with pytest.raises(ParityError) as info:
        check_parity("silero_vad", comp, entries)
    message = str(info.value)
    assert "output 'vad_output' on kiln_fp16" in message
    assert "max |diff| 0.1" in message and "atol 0.02" in message
    relaxed = dataclasses.replace(comp, validate=dataclasses.replace(comp.validate, report_only=True))
    failures = check_parity("silero_vad", relaxed, entries)
    assert len(failures) == 1 and "vad_output" in failures[0]


def test_apple_backend_is_absent_off_macos(unified_package):
    import platform

    backend = bk.apple_backend(unified_package, "cpuAndNeuralEngine")
    if platform.system() != "Darwin":
        assert isinstance(backend, bk.Absent) and backend.name == "coreml_cpuAndNeuralEngine"


def test_integer_outputs_are_judged_by_agreement(kiln_config):
    comp = kiln_config.component("parakeet_tdt_v3_tiny", "joint_decision")
    ids = np.arange(188, dtype=np.int32).reshape(1, 188, 1)
    flipped = ids.copy()
    flipped[0, :3, 0] += 1                       # 3 of 188 near-ties flip: 98.4% agreement
    step = {"token_prob": np.zeros((1, 188, 1), np.float32), "duration": np.zeros((1, 188, 1), np.int32)}
    entries = parity_entries(comp, {"torch_cpu": [{**step, "token_id": ids}],
                                    "kiln_fp16": [{**step, "token_id": flipped}]}, "torch_cpu")
    token = next(e for e in entries if e["output"] == "token_id")
    assert token["agreement"] == pytest.approx(185 / 188) and token["psnr_db"] is None
    strict = dataclasses.replace(comp, validate=dataclasses.replace(comp.validate, outputs={}))
    with pytest.raises(ParityError, match=r"98.4% of elements equal \(min_agreement 100.0%\)"):
        check_parity("m", strict, parity_entries(strict, {"torch_cpu": [{**step, "token_id": ids}],
                                                          "kiln_fp16": [{**step, "token_id": flipped}]},
                                                 "torch_cpu"))


def _with_broken_conv(package, out):
    """A copy of ``package`` whose first conv has groups=7 (its input has 1 channel): a program kiln's
    executor loads and fails to run, naming the op."""
    import shutil

    from kiln.coreml.proto import Model_pb2

    shutil.copytree(package, out)
    spec_file = out / "Data" / "com.apple.CoreML" / "model.mlmodel"
    model = Model_pb2.Model()
    model.ParseFromString(spec_file.read_bytes())
    main = model.mlProgram.functions["main"]
    ops = main.block_specializations[main.opset].operations
    conv = next(op for op in ops if op.type == "conv")
    groups = next(op for op in ops if op.type == "const" and op.outputs[0].name == conv.inputs["groups"].arguments[0].name)
    groups.attributes["val"].immediateValue.tensor.ints.values[0] = 7
    spec_file.write_bytes(model.SerializeToString())
    return out, conv.outputs[0].name


def test_an_executor_error_is_a_failed_row_naming_the_op_and_the_other_backends_still_run(
        kiln_config, unified_reference, unified_package, tmp_path):
    from kiln.validate.run import stream_backends

    broken, node = _with_broken_conv(unified_package, tmp_path / "broken.mlpackage")
    model = kiln_config.model("silero_vad")
    comp = kiln_config.component("silero_vad", "unified")
    spec = get_family("silero_vad").check_contract(comp)
    # one backend on the broken program, the next on the sound one: the first's error is recorded
    # and the second streams all 625 steps
    errors = {}
    present = [bk.kiln_backend(broken, "fp32"), bk.kiln_backend(unified_package, "fp16")]
    steps, latency = stream_backends(spec, comp, present, {}, unified_reference, errors)
    assert errors["kiln_fp32"]["op"] == "conv" and errors["kiln_fp32"]["node"] == node
    assert errors["kiln_fp32"]["step"] == 0 and errors["kiln_fp32"]["error"] == "OpExecutionError"
    assert latency["kiln_fp32"] is None and latency["kiln_fp16"]["calls"] == 625
    entries = parity_entries(comp, {"torch_cpu": unified_reference.outputs, **steps}, "torch_cpu", errors=errors)
    failed = [e for e in entries if e["backend"] == "kiln_fp32"]
    assert [e["output"] for e in failed] == [t.name for t in comp.outputs]
    assert all(not e["match"] and e["op"] == "conv" and e["max_abs"] is None for e in failed)
    assert failed[0]["problem"].startswith(f"executor error at step 0: op 'conv' (opset iOS17) producing '{node}'")
    assert all(e["match"] for e in entries if e["backend"] == "kiln_fp16")

    # the whole component: both precisions fail on the broken program, each recorded, one ParityError
    with pytest.raises(ParityError) as info:
        validate_component(spec, model, comp, {}, unified_reference, broken, tmp_path / "plots")
    message = str(info.value)
    for backend in ("kiln_fp32", "kiln_fp16"):
        assert f"output 'vad_output' on {backend}: executor error at step 0: op 'conv'" in message
    relaxed = dataclasses.replace(comp, validate=dataclasses.replace(comp.validate, report_only=True))
    result = validate_component(spec, model, relaxed, {}, unified_reference, broken, tmp_path / "plots")
    assert set(result["backend_errors"]) == {"kiln_fp32", "kiln_fp16"}
    assert not result["validation"]["passed"] and len(result["validation"]["failures"]) == 6
    assert result["latency"]["kiln_fp16"] is None and result["task_metrics"] == {}
    assert {e["op"] for e in result["parity"]} == {"conv"}
    assert result["fp16_report"] is None and (tmp_path / "plots" / "unified_fp16.png").exists()
