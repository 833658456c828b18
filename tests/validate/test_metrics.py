"""Parity metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np

from kiln.validate.metrics import Tolerance, compare, max_abs, max_rel, psnr_db, quality


def test_identical_outputs():
    ref = np.array([0.5, -1.0, 2.0])
    result = compare(ref, ref.copy(), Tolerance(1e-6, 0.0, 35.0))
    assert result["max_abs"] == 0.0 and result["quality"] == 1.0
    assert result["psnr_db"] is None  # +inf is not JSON: recorded as null
    assert result["match"]


def test_known_values():
    ref = np.array([1.0, -2.0, 4.0, 0.0])
    out = np.array([1.0, -2.5, 4.0, 0.1])
    assert max_abs(ref, out) == 0.5
    # relative to each element, floored at 1e-3 of the peak (4.0): 0.1 / 0.004 at the zero
    assert math.isclose(max_rel(ref, out), 0.1 / 4e-3)
    rmse = math.sqrt((0.25 + 0.01) / 4)
    assert math.isclose(psnr_db(ref, out), 20 * math.log10(4.0 / rmse))
    assert math.isclose(quality(ref, out), 1 - math.sqrt(0.26) / math.sqrt(21.0))


def test_tolerances_and_psnr_floor():
    ref = np.linspace(-1, 1, 100)
    out = ref + 1e-3
    assert compare(ref, out, Tolerance(2e-3, 0.0))["match"]
    assert not compare(ref, out, Tolerance(5e-4, 0.0))["match"]
    assert not compare(ref, out, Tolerance(2e-3, 0.0, min_psnr_db=80.0))["match"]


def test_nan_and_shape_mismatch_never_match():
    ref = np.zeros(3)
    result = compare(ref, np.array([0.0, np.nan, 0.0]), Tolerance(1.0, 1.0))
    assert not result["match"] and "NaN" in result["problem"]
    result = compare(ref, np.zeros(4), Tolerance(1.0, 1.0))
    assert not result["match"] and "shape [4]" in result["problem"]


def test_a_nan_or_inf_output_is_recorded_as_json_not_a_crash():
    """A quantized preprocessor (palettized log-mel filterbank) gave NaN; its record must still be
    written: JSON has no NaN, so the errors are null beside the named problem and quality is 0."""
    import json

    ref = np.array([1.0, 2.0, 3.0])
    for bad in (np.nan, np.inf):
        out = np.array([1.0, bad, 3.0])
        assert quality(ref, out) == 0.0
        result = compare(ref, out, Tolerance(1.0, 1.0))
        assert result["max_abs"] is None and result["max_rel"] is None and result["quality"] == 0.0
        assert not result["match"] and "NaN or inf" in result["problem"]
        json.dumps(result, allow_nan=False)  # what write_json does


def test_task_metrics_with_nan_become_null():
    from kiln.validate.metrics import finite_tree

    metrics = {"cosine_similarity": float("nan"), "per_step": [0.5, float("inf")], "steps": 3, "ok": True}
    assert finite_tree(metrics) == {"cosine_similarity": None, "per_step": [0.5, None], "steps": 3, "ok": True}
