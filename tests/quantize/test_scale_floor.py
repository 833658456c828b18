"""A weight slice with a zero range (an all-zero row: an embedding's padding row, a pruned output
channel) quantizes without NaN: coremltools 9.0 gives it scale 0 and ``round(0/0)`` values; kiln
floors the scale so the row dequantizes to exactly 0 and every other row is untouched."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from kiln.quantize.strategies import STRATEGIES, QuantizeContext, floor_scales, floored_scales


def _weight(dtype) -> np.ndarray:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 300)).astype(dtype)
    w[2] = 0.0                      # all-zero row
    w[4] = 0.25                     # constant, non-zero row
    return w


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("mode,qdtype", [("LINEAR_SYMMETRIC", "int8"), ("LINEAR", "uint8")])
def test_zero_row_gets_the_floor_scale_and_zero_values(dtype, mode, qdtype):
    from coremltools.converters.mil.mil import types
    from coremltools.optimize._utils import quantize_weight_by_dtype

    w = _weight(dtype)
    qtype = getattr(types, qdtype)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore")
        raw_q, raw_scale, _ = quantize_weight_by_dtype(w, (1,), qtype, mode)
    assert raw_scale[2] == 0 and np.isnan(raw_q[2]).all()     # the bug being fixed
    q, scale, zp = floor_scales(quantize_weight_by_dtype)(w, (1,), qtype, mode)
    assert np.all(np.isfinite(q)) and np.all(np.isfinite(scale)) and np.all(scale > 0)
    assert scale[2] == np.finfo(dtype).smallest_subnormal
    offset = np.zeros(6) if zp is None else np.asarray(zp, np.float64)
    dequantized = (q - offset[:, None]) * np.asarray(scale, np.float64)[:, None]
    assert np.all(dequantized[2] == 0.0)
    np.testing.assert_allclose(dequantized[4], 0.25, rtol=1e-2)
    rows = [0, 1, 3, 4, 5]   # rows with a range: exactly what coremltools computed
    np.testing.assert_array_equal(q[rows], raw_q[rows])
    np.testing.assert_array_equal(scale[rows], raw_scale[rows])


@pytest.mark.parametrize("strategy", ["int8_per_channel", "int8_per_tensor"])
def test_linear_strategy_on_a_model_with_a_zero_row_runs_finite_on_kiln(strategy, tmp_path):
    """Through coremltools' pass and kiln's executor: a Linear layer with a zero output row."""
    import coremltools as ct
    import torch

    from kiln.mil import load_model

    torch.manual_seed(0)
    linear = torch.nn.Linear(300, 20).eval()
    with torch.no_grad():
        linear.weight[3] = 0.0
    x = torch.randn(1, 300)
    traced = torch.jit.trace(linear, x)
    mlmodel = ct.convert(traced, inputs=[ct.TensorType(name="x", shape=(1, 300), dtype=np.float32)],
                         convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
                         compute_precision=ct.precision.FLOAT32, skip_model_load=True)
    with floored_scales(), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)      # no 0/0 left inside coremltools
        quantized = STRATEGIES[strategy].apply(mlmodel, QuantizeContext(weight_threshold=1000))
    path = tmp_path / "q.mlpackage"
    quantized.save(str(path))
    y = next(iter(load_model(path).plan("fp32").run({"x": x.numpy()}).values()))
    expected = linear(x).detach().numpy()
    assert np.all(np.isfinite(y))
    assert y[0, 3] == pytest.approx(expected[0, 3], abs=1e-6)      # bias only: the row is exactly 0
    assert np.abs(y - expected).max() < 0.05 * np.abs(expected).max()
