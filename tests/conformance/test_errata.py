"""Why each erratum in errata.py names the suite, not kiln, as wrong: the op's documented behaviour
computed independently of kiln, kiln agreeing with it, and the suite's expectation disagreeing."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.mil.ops.image_resizing import crop_resize_ios16, upsample_bilinear
from kiln.mil.ops.normalization import local_response_norm

from .errata import ERRATA, erratum_for


def _lrn_by_definition(x, size, alpha, beta, k):
    """``x_c / (k + alpha / size * sum_{c' in window(c)} x_c'^2) ** beta`` over axis 1, by loops."""
    out = np.empty_like(x, dtype=np.float64)
    channels = x.shape[1]
    for c in range(channels):
        window = range(max(0, c - size // 2), min(channels, c + (size - 1) // 2 + 1))
        total = sum(np.square(x[:, j].astype(np.float64)) for j in window)
        out[:, c] = x[:, c] / (k + alpha / size * total) ** beta
    return out


def test_lrn_smoke_expectation_normalises_over_an_axis_of_size_one():
    # the suite's smoke case: x of shape [n=1, C=3, D=2], size 2 and 3
    x = np.array([[[1.0, -7.0], [5.0, -6.0], [-3.0, -5.0]]], dtype=np.float32)
    suite_size2 = np.array([[[0.99996257, -6.98716545], [4.99531746, -5.99191284],
                             [-2.99898791, -4.99531746]]], dtype=np.float32)
    for size, suite in ((2, suite_size2),):
        documented = _lrn_by_definition(x, size, 1e-4, 0.75, 1.0)
        np.testing.assert_allclose(local_response_norm(x, size, 1e-4, 0.75, 1.0), documented, rtol=1e-6)
        # the suite's numbers are x / (1 + alpha/size * x^2) ** beta: each element alone
        alone = x / (1.0 + 1e-4 / size * np.square(x.astype(np.float64))) ** 0.75
        np.testing.assert_allclose(suite, alone, rtol=1e-6)
        assert not np.allclose(suite, documented, atol=1e-4, rtol=1e-5)  # so the fp32 tolerance fails


def test_crop_resize_expectation_7_899_is_7_9_rounded():
    x = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)
    roi = np.array([0, 0.5, 1.8, 1.0, 0.3], dtype=np.float32).reshape(1, 1, 5, 1, 1)
    out = crop_resize_ios16(x, roi, 2, 2, True, 1.0, "CORNERS_HEIGHT_FIRST", "ALIGN_CORNERS", 0.0)
    # row 0.5*3 = 1.5 (first sample), column 0.3*3 = 0.9 (last sample); the ramp is 4*row + col + 1
    assert out[0, 0, 0, 0, 1] == pytest.approx(4 * 1.5 + 0.9 + 1, abs=1e-6)
    assert abs(out[0, 0, 0, 0, 1] - 7.899) > 1e-4 + 1e-5 * 7.899


def test_upsample_bilinear_is_recompute_scale_factor_true_not_the_given_fractional_scale():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).uniform(-100, 100, (2, 5, 10, 22)).astype(np.float32)

    def torch_upsample(recompute):
        return torch.nn.functional.interpolate(
            torch.from_numpy(x), scale_factor=(0.5, 0.75), mode="bilinear", align_corners=False,
            recompute_scale_factor=recompute).numpy()

    kiln = upsample_bilinear(x, 0.5, 0.75, False)
    assert kiln.shape == (2, 5, 5, 16)
    # what the MIL spec documents (the scale recomputed from the output size) ...
    np.testing.assert_allclose(kiln, torch_upsample(True), atol=1e-4, rtol=1e-5)
    # ... is not the suite's expectation, even at the fp16 backend's tolerance and its rtol=0.5
    assert not np.allclose(kiln, torch_upsample(False), atol=0.5, rtol=0.5)


def test_every_erratum_has_a_reason_and_matches_suite_case_ids():
    for erratum in ERRATA:
        assert erratum.reason.startswith(("suite erratum:", "undefined by the MIL spec:"))
        assert "::" in erratum.pattern
    assert erratum_for(
        "iOS16/test_image_resizing.py::TestCropResize::test_builder_to_backend_ios16[compute_unit="
        "ComputeUnit.CPU_ONLY-backend=BackendConfig(backend='mlprogram', precision='fp32', "
        "opset_version=<AvailableTarget.iOS16: 7>)-pad_value=1.0]"
    ) is not None
    assert erratum_for("iOS16/test_image_resizing.py::TestCropResize::test_builder_to_backend_ios16["
                       "precision='fp16'") is None



def test_a_bracket_in_a_pattern_is_the_character():
    # the iOS17 crop_resize pattern ends in "-N=3]": as an fnmatch class it matched no case id
    ios17 = ("iOS17/test_image_resizing.py::TestCropResize::test_builder_to_backend_ios17[compute_unit="
             "ComputeUnit.CPU_ONLY-backend=BackendConfig(backend='mlprogram', precision='fp32', "
             "opset_version=<AvailableTarget.iOS17: 8>)-N={}]")
    assert erratum_for(ios17.format(3)) is not None
    assert erratum_for(ios17.format(1)) is None


def test_fp16_overflow_erratum_needs_same_signed_infinity_and_every_other_element_matching():
    from .errata import beyond_fp16_range_only

    want = {"y": np.array([1181.474, 67293.13, -4.46e5, 260.23], np.float32)}
    kiln = np.array([1181.0, np.inf, -np.inf, 260.25], np.float32)  # kiln's fp16 result
    assert beyond_fp16_range_only({"y": kiln}, want, atol=0.5, rtol=0.05)
    assert not beyond_fp16_range_only({"y": kiln * np.array([1, 1, -1, 1], np.float32)}, want, 0.5, 0.05)
    assert not beyond_fp16_range_only({"y": np.array([1181.0, np.inf, -np.inf, 300.0], np.float32)}, want, 0.5, 0.05)
    in_range = {"y": np.array([1.0, 2.0], np.float32)}
    assert not beyond_fp16_range_only({"y": np.array([1.0, 3.0], np.float32)}, in_range, 0.5, 0.05)


def test_the_crop_resize_box_outside_the_image_is_a_known_disagreement_with_apple_not_an_erratum():
    """coremltools' suite records Apple's runtime returning the full image's crop for the normalized
    box [2, 2, 1, 1]; kiln samples outside the image (0). Counted against kiln as a disagreement with
    Apple's runtime, in the summary and in `kiln ops --coverage`, never as a suite erratum."""
    from kiln.mil.coverage import APPLE_DISAGREEMENT, apple_disagreement_for, coverage
    from kiln.mil.ops.image_resizing import crop_resize

    from .plugin import summarize

    x = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)
    args = (2, 2, True, 1.0, "CORNERS_HEIGHT_FIRST", "UNALIGN_CORNERS")
    suite = np.array([3.5, 5.5, 11.5, 13.5], np.float32).reshape(1, 1, 1, 2, 2)
    full = crop_resize(x, np.array([0, 0, 1, 1], np.float32).reshape(1, 1, 4, 1, 1), *args)
    np.testing.assert_array_equal(full, suite)                       # what Apple gives: the full image
    outside = crop_resize(x, np.array([2, 2, 1, 1], np.float32).reshape(1, 1, 4, 1, 1), *args)
    np.testing.assert_array_equal(outside, np.zeros_like(suite))     # what kiln gives
    case_id = ("iOS15/test_image_resizing.py::TestCropResize::test_builder_to_backend_smoke[compute_unit="
               "ComputeUnit.CPU_ONLY-backend=BackendConfig(backend='mlprogram', precision='fp16', "
               "opset_version=<AvailableTarget.iOS15: 6>)-is_symbolic=False]")
    disagreement = apple_disagreement_for(case_id)
    assert disagreement is not None and erratum_for(case_id) is None
    assert disagreement.reason.startswith(APPLE_DISAGREEMENT + ": crop_resize (iOS15)")
    assert coverage()["iOS15"].disagreements == ("crop_resize",)
    summary = summarize({case_id: {"outcome": "xfailed", "reason": disagreement.reason, "precision": "fp16",
                                   "executed": True, "opset": "iOS15", "ops": ["crop_resize"]},
                         "other": {"outcome": "xfailed", "reason": "suite erratum: x", "precision": "fp16"}})
    assert summary["apple_disagreements"] == {disagreement.reason: [case_id]}
    assert summary["xfailed_by_reason"] == {"suite erratum: x": 1}
    assert summary["per_precision"]["fp16"]["disagrees_with_apple"] == 1
