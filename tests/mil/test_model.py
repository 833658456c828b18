"""Loading, the execution plan's contract, precision modes, typed errors, coverage, the CLI, and a
bounded fuzz test: corrupted packages only ever raise KilnError subclasses."""

import argparse
import json
import shutil

import numpy as np
import pytest
from coremltools.converters.mil import Builder as mb
from milprog import save_program

from kiln.foundation.errors import ContractError, KilnError
from kiln.mil import (
    InputContractError,
    ModelFormatError,
    OpExecutionError,
    PrecisionError,
    UnsupportedOpError,
    coverage,
    load_model,
)
from kiln.foundation.errors import run_command
from kiln.mil.cli import add_commands
from tests.fuzzing import corrupt_copy

RNG = np.random.default_rng(17)
W = RNG.standard_normal((16, 8)).astype(np.float32)
B = RNG.standard_normal(16).astype(np.float32)


@pytest.fixture(scope="module")
def small_package(tmp_path_factory):
    def build(x, n):
        y = mb.linear(x=x, weight=W, bias=B)
        return [mb.softmax(x=mb.relu(x=y), axis=-1), mb.add(x=n, y=np.int32(1))]

    return save_program(build, [("x", (2, 8), np.float32), ("n", (3,), np.int32)],
                        tmp_path_factory.mktemp("small"), "iOS17")


def _inputs():
    return {"x": RNG.standard_normal((2, 8)).astype(np.float32), "n": np.array([1, 2, 3], np.int32)}


def test_load_and_run_both_precisions(small_package):
    model = load_model(small_package)
    assert model.kind == "mlpackage" and model.specification_version == 8 and model.opset() == "iOS17"
    assert [s.describe() for s in model.inputs()] == ["x: fp32[2, 8]", "n: int32[3]"]
    inputs = _inputs()
    fp32 = model.predict(inputs, precision="fp32")
    fp16 = model.predict(inputs, precision="fp16")
    assert fp32.precision == "fp32" and fp16.precision == "fp16"
    logits = np.maximum(inputs["x"] @ W.T + B, 0)
    want = np.exp(logits - logits.max(-1, keepdims=True))
    want /= want.sum(-1, keepdims=True)
    names = [s.name for s in model.outputs()]
    np.testing.assert_allclose(fp32[names[0]], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fp32[names[1]], [2, 3, 4])
    assert model.plan("fp32") is model.plan("fp32")  # compiled once


def test_fp16_mode_rounds_fp16_ops(tmp_path):
    x = np.array([[1.0001, 2.0003, 3.0007]], np.float32)

    def build(x):
        return [mb.cast(x=mb.mul(x=mb.cast(x=x, dtype="fp16"), y=np.float16(3.0)), dtype="fp32")]

    model = load_model(save_program(build, [("x", x.shape, np.float32)], tmp_path, "iOS17"))
    name = model.outputs()[0].name
    np.testing.assert_allclose(model.predict({"x": x}, "fp32")[name], x * 3, rtol=1e-7)
    expected16 = (x.astype(np.float16).astype(np.float32) * 3).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(model.predict({"x": x}, "fp16")[name], expected16)


def test_contract_errors_list_expected_inputs(small_package):
    plan = load_model(small_package).plan()
    good = _inputs()
    cases = [
        ({"x": good["x"]}, "missing \\['n'\\]"),
        ({**good, "extra": good["n"]}, "unexpected \\['extra'\\]"),
        ({**good, "x": good["x"].astype(np.float64)}, "dtype float64"),
        ({**good, "x": good["x"][:, :4]}, "shape \\[2, 4\\]"),
        ({**good, "n": [1, 2, 3]}, "numpy array"),
    ]
    for inputs, message in cases:
        with pytest.raises(InputContractError, match=message) as info:
            plan.run(inputs)
        assert "expected inputs: x: fp32[2, 8], n: int32[3]" in str(info.value)
        assert isinstance(info.value, ContractError)
    with pytest.raises(PrecisionError):
        load_model(small_package).plan("int8")


def _rewrite_spec(package, edit):
    from coremltools.proto import Model_pb2

    path = package / "Data" / "com.apple.CoreML" / "model.mlmodel"
    spec = Model_pb2.Model()
    spec.ParseFromString(path.read_bytes())
    edit(spec)
    path.write_bytes(spec.SerializeToString())


def test_unsupported_op_named_at_plan_build(small_package, tmp_path):
    copy = tmp_path / "copy.mlpackage"
    shutil.copytree(small_package, copy)

    def edit(spec):
        block = spec.mlProgram.functions["main"].block_specializations["CoreML7"]
        for op in block.operations:
            if op.type == "softmax":
                op.type = "frobnicate"

    _rewrite_spec(copy, edit)
    model = load_model(copy)
    with pytest.raises(UnsupportedOpError) as info:
        model.plan()
    err = info.value
    assert err.op_type == "frobnicate" and err.opset == "iOS17" and err.node
    assert "frobnicate" in str(err) and "iOS17" in str(err) and err.node in str(err)


def test_malformed_packages(small_package, tmp_path):
    def fresh(name):
        target = tmp_path / name
        shutil.copytree(small_package, target)
        return target

    broken = fresh("no_manifest.mlpackage")
    (broken / "Manifest.json").unlink()
    with pytest.raises(ModelFormatError, match="Manifest.json: missing"):
        load_model(broken)

    broken = fresh("bad_root.mlpackage")
    manifest = json.loads((broken / "Manifest.json").read_text())
    manifest["rootModelIdentifier"] = "nope"
    (broken / "Manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFormatError, match="names no item"):
        load_model(broken)

    broken = fresh("garbage_spec.mlpackage")
    (broken / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(b"\xff\xff\xff garbage")
    with pytest.raises(ModelFormatError, match="protobuf"):
        load_model(broken)

    broken = fresh("no_weights.mlpackage")
    shutil.rmtree(broken / "Data" / "com.apple.CoreML" / "weights")
    with pytest.raises(ModelFormatError, match="item 'weights' is missing"):
        load_model(broken)

    with pytest.raises(ModelFormatError, match="no such model"):
        load_model(tmp_path / "absent.mlpackage")


def test_op_failure_names_the_node():
    from kiln.mil.output_checks import OutputCheck
    from kiln.mil.steps import make_generic_step
    from kiln.mil.registry import lookup

    impl = lookup("reshape", "iOS17")
    step = make_generic_step(impl, {"shape": np.array([5, 5], np.int32)}, [("x", 0)], [], [1],
                             [OutputCheck(None, "fp32", True)], None, ("reshape", "iOS17", "node_7"))
    with pytest.raises(OpExecutionError, match="op 'reshape' \\(opset iOS17\\) producing 'node_7' failed"):
        step([np.zeros(6, np.float32), None])


def test_coverage_is_complete_against_coremltools():
    report = coverage()
    assert set(report) == {"iOS15", "iOS16", "iOS17", "iOS18"}
    for opset, cov in report.items():
        assert len(cov.defined) > 140
        assert cov.missing == (), (opset, cov.missing)
    assert "constexpr_blockwise_shift_scale" in report["iOS18"].implemented
    assert "constexpr_blockwise_shift_scale" not in report["iOS17"].defined


def _cli(argv):
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    return run_command(parser.parse_args(argv))


def test_cli_predict_inspect_ops(small_package, tmp_path, capsys):
    inputs = _inputs()
    np.savez(tmp_path / "in.npz", **inputs)
    assert _cli(["predict", str(small_package), "--inputs", str(tmp_path / "in.npz"), "--precision", "fp16",
                 "--out", str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz") as out:
        assert len(out.files) == 2
    assert _cli(["inspect", str(small_package)]) == 0
    text = capsys.readouterr().out
    assert "specification version: 8" in text and "opset: iOS17" in text and "linear" in text
    assert "fp32" in text and "weight bytes by dtype" in text
    assert _cli(["ops", "--coverage"]) == 0
    assert "iOS18:" in capsys.readouterr().out
    np.savez(tmp_path / "bad.npz", x=inputs["x"])
    assert _cli(["predict", str(small_package), "--inputs", str(tmp_path / "bad.npz"),
                 "--out", str(tmp_path / "o.npz")]) == 2
    assert "missing ['n']" in capsys.readouterr().err
    assert not (tmp_path / "o.npz").exists()


def test_fuzz_byte_flips_raise_only_kiln_errors(small_package, tmp_path):
    files = sorted(p for p in small_package.rglob("*") if p.is_file())
    originals = {p.relative_to(small_package): p.read_bytes() for p in files}
    rng = np.random.default_rng(1234)
    outcomes = {"ok": 0, "error": 0}
    inputs = _inputs()
    for iteration in range(200):
        target = tmp_path / f"fuzz{iteration % 4}.mlpackage"
        corrupt_copy(originals, small_package, target, rng)
        try:
            model = load_model(target)
            model.predict(inputs, precision="fp32" if iteration % 2 else "fp16")
            outcomes["ok"] += 1
        except KilnError:
            outcomes["error"] += 1
    assert outcomes["error"] > 20, outcomes


def test_cli_predict_edges_are_clean_errors(small_package, tmp_path, capsys):
    np.savez(tmp_path / "in.npz", **_inputs())
    data = (tmp_path / "in.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    np.save(tmp_path / "in.npy", np.zeros(3, np.float32))
    out = tmp_path / "out" / "o.npz"
    cases = [
        (["--inputs", str(tmp_path / "truncated.npz"), "--out", str(tmp_path / "o.npz")],
         ["truncated.npz", "not a readable .npz"]),
        (["--inputs", str(tmp_path / "in.npy"), "--out", str(tmp_path / "o.npz")], ["in.npy", "single .npy array"]),
        (["--inputs", str(tmp_path / "in.npz"), "--out", str(out)], [str(out.parent), "does not exist"]),
        (["--inputs", str(tmp_path / "in.npz"), "--out", "/proc/kiln-test.npz"], ["/proc/kiln-test.npz", "cannot write"]),
    ]
    for extra, names in cases:
        before = sorted(p.name for p in tmp_path.iterdir())
        assert _cli(["predict", str(small_package), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("kiln: error: ") and "Traceback" not in err
        assert all(name in err for name in names), err
        assert sorted(p.name for p in tmp_path.iterdir()) == before

    assert _cli(["predict", str(small_package), "--inputs", str(tmp_path / "in.npz"),
                 "--out", str(tmp_path / "noext")]) == 0
    assert f"wrote {tmp_path / 'noext.npz'} " in capsys.readouterr().out
    with np.load(tmp_path / "noext.npz") as written:
        assert len(written.files) == 2
