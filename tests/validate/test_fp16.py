"""The fp16 report: op by op in kiln's executor (fp32 plan vs fp16 plan), overflow named, and the
per-op fp32 fallback (``export.fp32_ops``) that removes it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from kiln.config import ExportSettings, TensorSpec
from kiln.foundation.errors import ExportError
from kiln.export.convert import convert_traced, trace_component
from kiln.export.package import save_mlpackage
from kiln.validate import fp16
from tests.helpers.kiln_test_nets import EnergyEncoder


def _component(precision="float16", fp32_ops=()):
    settings = ExportSettings("iOS17", precision, "CPU_ONLY", ("all",), fp32_ops=tuple(fp32_ops))
    return SimpleNamespace(model="m", name="enc", inputs=(TensorSpec("mels", (1, 40, 50), "float32"),),
                           outputs=(TensorSpec("embedding", (1, 64), "float32"),
                                    TensorSpec("frames", (1, 64, 50), "float32")), export=settings)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return EnergyEncoder().eval()


def _loud(scale: float = 3000.0) -> dict:
    rng = np.random.default_rng(0)
    return {"mels": rng.uniform(-scale, scale, (1, 40, 50)).astype(np.float32)}


def _export(net, comp, path, feed):
    report: dict = {}
    save_mlpackage(convert_traced(trace_component(net, comp, feed), comp, comp.export, report), path)
    return report


def _export_and_path(net, fp32_ops, path, feed):
    _export(net, _component(fp32_ops=fp32_ops), path, feed)
    return path


def test_overflowing_ops_are_named_and_the_fallback_keeps_them_fp32(net, tmp_path):
    feed = _loud()
    _export(net, _component(), tmp_path / "a.mlpackage", feed)
    report = fp16.summarise(fp16.measure(tmp_path / "a.mlpackage", [feed]), [0], "float16")
    # the energy (sum of squares, 4.2e6) and the squares (3.5e5) exceed 65504 in fp32
    assert {(o["op"], o["name"]) for o in report["overflows"]} == {("reduce_sum", "energy"), ("mul", "var_24")}
    assert report["overflows"][0]["max_abs"] > 4e6 and report["near_range_count"] >= 2
    assert report["suggested_fp32_ops"] == ["energy", "var_24"]
    with pytest.raises(fp16.Fp16OverflowError,
                       match=r"op 'energy' \(reduce_sum\).*export.fp32_ops: \[energy, var_24\]"):
        fp16.check_overflow("m/enc", report)
    # kept fp32, the energy's value is cast back to fp16 for the rsqrt reading it: the cast
    # overflows, and the suggestion adds its reader
    kept = fp16.summarise(fp16.measure(_export_and_path(net, ("energy", "var_24"), tmp_path / "k.mlpackage", feed),
                                       [feed]), [0], "float16", ("energy", "var_24"))
    assert [(o["op"], o["name"]) for o in kept["overflows"]] == [("cast", "energy_to_fp16")]
    assert kept["suggested_fp32_ops"] == ["energy", "var_24", "var_30"]
    with pytest.raises(fp16.Fp16OverflowError, match=r"ops reading it must stay fp32.*\[energy, var_24, var_30\]"):
        fp16.check_overflow("m/enc", kept)
    # the fallback by the names the report gave (and the rsqrt after them, so the value is small
    # again before it returns to fp16)
    names = ("var_24", "energy", "var_30")
    policy = _export(net, _component(fp32_ops=names), tmp_path / "b.mlpackage", feed)
    assert policy["named_fp32_ops_seen"] == sorted(names)
    ops = fp16.measure(tmp_path / "b.mlpackage", [feed])
    fixed = fp16.summarise(ops, [0], "float16", names)
    fp16.check_overflow("m/enc", fixed)
    assert fixed["overflows"] == [] and fixed["fp32_fallback_ops"] == list(names)
    by_name = {o["name"]: o for o in ops}
    assert by_name["energy"]["dtype"] == "fp32" and by_name["energy"]["max_abs"] > 4e6
    from kiln.mil import load_model

    model = load_model(tmp_path / "b.mlpackage")
    got, want = model.plan("fp16").run(feed)["embedding"], model.plan("fp32").run(feed)["embedding"]
    assert np.all(np.isfinite(got)) and np.abs(got - want).max() < 2e-3


def test_a_fallback_naming_no_op_is_an_export_error(net, tmp_path):
    with pytest.raises(ExportError, match="export.fp32_ops names op.*not_an_op"):
        _export(net, _component(fp32_ops=("energy", "not_an_op")), tmp_path / "c.mlpackage", _loud())


def test_error_growth_and_an_fp32_package(net, tmp_path):
    feed = _loud(4.0)
    _export(net, _component(), tmp_path / "q.mlpackage", feed)
    ops = fp16.measure(tmp_path / "q.mlpackage", [feed, _loud(2.0)])
    report = fp16.summarise(ops, [0, 1], "float16")
    assert report["overflows"] == [] and report["near_range"] == [] and report["fp16_ops"] >= 8
    # fp16 rounding: every fp16 op's relative error is around 2^-11, none is zero
    errors = {o["name"]: o["error"] for o in ops if o["dtype"] == "fp16"}
    assert all(0 < e < 0.02 for e in errors.values()), errors
    assert report["error_growth"] and report["error_growth"][0]["added"] == pytest.approx(max(o["added"] for o in ops), rel=1e-3)
    _export(net, _component("float32"), tmp_path / "f.mlpackage", feed)
    exact = fp16.summarise(fp16.measure(tmp_path / "f.mlpackage", [feed]), [0], "float32")
    assert exact["fp16_ops"] == 0 and exact["max_error"] == 0.0 and exact["error_growth"] == []


def test_step_outputs_are_what_run_returns(net, tmp_path):
    from kiln.mil import load_model

    feed = _loud(4.0)
    _export(net, _component(), tmp_path / "s.mlpackage", feed)
    plan = load_model(tmp_path / "s.mlpackage").plan("fp16", fuse=False)
    last = {node: outs[0][1].copy() for _, node, outs, _ in plan.step_outputs(feed)}
    out = plan.run(feed)
    np.testing.assert_array_equal(last["embedding"], out["embedding"])
    np.testing.assert_array_equal(last["frames"], out["frames"])


def test_sampled_steps_are_bounded_and_include_both_ends():
    assert fp16.sample_steps(2) == [0, 1]
    assert fp16.sample_steps(625) == [0, 312, 624]
    assert len(fp16.sample_steps(10_000)) == fp16.MAX_STEPS


def _old_stats(a, b):
    """The fp16 report's per-output figures as first written (boolean-masked float64 copies)."""
    finite = np.isfinite(a)
    largest = float(np.max(np.abs(a[finite]))) if finite.any() else None
    if not finite.any():
        return (not finite.all()), largest, 0.0
    if not np.isfinite(b[finite]).all():
        return (not finite.all()), largest, None
    a64, b64 = a[finite].astype(np.float64), b[finite].astype(np.float64)
    scale, diff = float(np.max(np.abs(a64))), float(np.max(np.abs(b64 - a64)))
    return (not finite.all()), largest, 0.0 if diff == 0.0 else (diff / scale if scale > 0 else diff)


@pytest.mark.parametrize("case", ["finite", "chunks", "equal", "zeros", "a_nan", "a_all_inf", "b_inf", "strided"])
def test_compare_gives_the_figures_of_the_masked_float64_formula_exactly(case):
    rng = np.random.default_rng(1)
    size = 3 * fp16.DIFF_CHUNK + 11 if case == "chunks" else 1000
    a = (rng.standard_normal(size) * 300).astype(np.float32).reshape(-1, 1)
    b = a.astype(np.float16).astype(np.float32)
    if case == "equal":
        b = a.copy()
    elif case == "zeros":
        a, b = np.zeros_like(a), np.zeros_like(a)
    elif case == "a_nan":
        a[3], a[7] = np.nan, np.inf
    elif case == "a_all_inf":
        a[:] = np.inf
    elif case == "b_inf":
        b[5] = np.inf
    elif case == "strided":
        a, b = a[::3], b[::3]
    assert fp16._compare(a, b) == _old_stats(a, b)


@pytest.mark.parametrize("case", ["spread", "ties", "tiny", "subnormal", "overflow", "one_large_chunk_later"])
def test_max_abs_diff_equals_the_float64_formula_on_hard_cases(case):
    """The float32 prefilter of :func:`fp16._max_abs_diff` finds the float64 maximum exactly: near
    ties that float32 rounding reorders, differences in float32's subnormal range, differences that
    overflow float32, and a later chunk holding the largest."""
    rng = np.random.default_rng(7)
    size = 2 * fp16.DIFF_CHUNK + 5
    a = (rng.standard_normal(size) * 1e3).astype(np.float32)
    b = (a + rng.standard_normal(size).astype(np.float32) * 1e-2).astype(np.float32)
    if case == "ties":   # many differences equal in float32, distinct in float64
        big = np.float32(1e7)
        a[:] = big
        b[:] = big + np.float32(1.0)
        a[::7] = np.nextafter(big, np.float32(0))
    elif case == "tiny":
        a = (rng.standard_normal(size) * 1e-35).astype(np.float32)
        b = (a * np.float32(1.5)).astype(np.float32)
    elif case == "subnormal":
        a = (rng.integers(-50, 50, size) * np.float32(1e-45)).astype(np.float32)
        b = (rng.integers(-50, 50, size) * np.float32(1e-45)).astype(np.float32)
    elif case == "overflow":
        a[11], b[11] = np.float32(3e38), np.float32(-3e38)
    elif case == "one_large_chunk_later":
        b[fp16.DIFF_CHUNK + 3] += np.float32(50.0)
    expected = float(np.max(np.abs(b.astype(np.float64) - a.astype(np.float64))))
    assert fp16._max_abs_diff(a, b) == expected
