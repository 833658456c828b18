"""Cases where kiln and coremltools' suite disagree and the suite, not kiln, is wrong.

A case listed here still runs on kiln with the suite's tolerance; only when that comparison fails is it
reported as ``xfailed`` with the erratum's reason (never as passed), and a listed case that starts to
match fails the run, so the list cannot go stale. ``tests/conformance/test_errata.py`` shows each
reason with the op's documented behaviour.

``FP16_BEYOND_RANGE`` is not a list of cases either: it applies to a case computed in fp16 whose
expected values overflow fp16 where kiln gives the same-signed infinity, every other element matching
(:func:`beyond_fp16_range_only`).

The general erratum (``FP16_TYPED_UNDER_FP32``) is not a list of cases: it applies to every case of
the suite's fp32 backend whose program is typed fp16 (see :func:`kiln_backend.kiln_precision`). Core ML
computes those ops in fp16, so an expectation held to the fp32 tolerance (1e-4 / 1e-5) cannot be met
by Apple's runtime either; coremltools' CI never runs the fp32 backends (they need
``INCLUDE_MIL_FP32_UNIT_TESTS=1``), so these expectations were never checked on Apple's runtime. Such
a case is xfailed only if kiln's fp16 result meets the suite's own fp16 rule (the tolerance the suite
applies to every fp16 computation); otherwise it fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

import numpy as np


@dataclass(frozen=True)
class Erratum:
    pattern: str  # over the case id (``iOS14/test_x.py::TestX::test_y[...]``): ``*`` any text, ``[`` itself
    reason: str
    # None: the erratum is about the expected values (applies when kiln's outputs do not match).
    # A text: about a check the test makes after kiln's outputs matched; applies only when the
    # case fails with an assertion whose message contains this text.
    after_compare: str | None = None


FP16_TYPED_UNDER_FP32 = (
    "suite erratum: fp16-typed program held to the fp32 backend's tolerance; Core ML computes "
    "fp16-typed ops in fp16 (typed execution), so Apple's runtime cannot meet it either, and "
    "coremltools' CI never runs this backend; kiln's fp16 result meets the suite's fp16 rule"
)

FP16_BEYOND_RANGE = (
    "suite erratum: expected values beyond fp16's largest finite value (65504) in a program computed "
    "in fp16: Core ML stores an fp16 tensor in fp16, so those elements are +-inf on any runtime, as on "
    "kiln; every other element meets the suite's tolerance (the suite draws unseeded inputs, so only "
    "some draws overflow)"
)

CROP_RESIZE_7_899 = (
    "suite erratum: the hand-typed expectation 7.899 is the bilinear sample 7.9 rounded down; "
        "the box [0, 0.5, 1.8, 1.0, 0.3] (normalized, times 3) samples the 4x4 ramp 1..16 at row 1.5, "
        "column 0.9: 4 * 1.5 + 0.9 + 1 = 7.9, off 7.899 by 1e-3, more than the fp32 tolerance; the "
        "fp16 backend's tolerance hides it"
)

ERRATA = (
    Erratum(
        "*/test_normalization.py::TestNormalizationLocalResponseNorm::test_builder_to_backend_smoke[*precision='fp32'*",
        "suite erratum: the hand-typed expectation normalises each element by itself only (as an LRN "
        "across an axis of size 1, the neural-network layer's C of a rank-3 [C, H, W] input); MIL "
        "local_response_norm takes x as [n, C, *D] and sums over the C=3 channels, which is what the "
        "suite's own torch-based stress test of the same op expects; the fp16 backend's tolerance hides it",
    ),
    Erratum(
        "iOS16/test_image_resizing.py::TestCropResize::test_builder_to_backend_ios16[*precision='fp32'*",
        CROP_RESIZE_7_899,
    ),
    Erratum(
        "iOS17/test_image_resizing.py::TestCropResize::test_builder_to_backend_ios17[*precision='fp32'*-N=3]",
        CROP_RESIZE_7_899,
    ),
    Erratum(
        "iOS14/test_image_resizing.py::TestUpsampleBilinear::test_builder_to_backend_stress[*"
        "-scale_factor=(0.5, 0.75)-align_corners=False-recompute_scale_factor=False]",
        "suite erratum: MIL's upsample_bilinear is documented as torch's recompute_scale_factor=True "
        "mode (the scale recomputed from the output size: width 22 * 0.75 = 16.5 -> 16, sampled at "
        "22/16 per pixel); the expectation is torch's recompute_scale_factor=False, sampling at the "
        "given 1/0.75, a mode MIL does not have (the suite's own xfail, rdar://81124053 'Support "
        "recompute_scale_factor', is a feature request, not a runtime defect)",
    ),
    Erratum(
        "iOS15/test_image_resizing.py::TestResample::test_builder_to_backend_smoke[*precision='fp32'*",
        "suite erratum: after kiln's outputs matched, the test counts 2 cast ops, the fp16 casts the "
        "converter inserts for the fp16 backend; the fp32 backend inserts none (a converter check "
        "written for the fp16 backend, the only one coremltools' CI runs)",
        after_compare="assert 0 == 2",
    ),
)


def erratum_for(case_id: str, after_compare: bool = False) -> Erratum | None:
    for erratum in ERRATA:
        # case ids hold brackets: a ``[`` in a pattern is the character, never an fnmatch class
        if (erratum.after_compare is not None) == after_compare and \
                fnmatchcase(case_id, erratum.pattern.replace("[", "[[]")):
            return erratum
    return None


FP16_MAX = float(np.finfo(np.float16).max)


def beyond_fp16_range_only(outputs: dict, expected: dict, atol: float, rtol: float) -> bool:
    """Whether every disagreement is an expected value beyond fp16's range that came out as the
    same-signed infinity (what storing it in fp16 gives), and at least one such value exists."""
    overflowed = False
    for name, want in expected.items():
        got = outputs.get(name)
        if not isinstance(got, np.ndarray):
            return False
        want = np.asarray(want, dtype=np.float64)
        if got.shape != want.shape:
            return False
        beyond = np.abs(want) > FP16_MAX
        if beyond.any():
            if not np.array_equal(got[beyond], np.copysign(np.inf, want[beyond])):
                return False
            overflowed = True
        if not np.allclose(got[~beyond], want[~beyond], atol=atol, rtol=rtol):
            return False
    return overflowed
