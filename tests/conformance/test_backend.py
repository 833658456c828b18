"""kiln_backend: how inputs, images and states reach kiln's executor, as Core ML hands them over."""

from __future__ import annotations

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402
from PIL import Image  # noqa: E402

from . import kiln_backend  # noqa: E402
from .kiln_backend import CURRENT_CASE, CaseRecord  # noqa: E402


def _convert(prog, precision=ct.precision.FLOAT32, target=ct.target.iOS15, **kwargs):
    return ct.convert(prog, convert_to="mlprogram", compute_precision=precision,
                      minimum_deployment_target=target, skip_model_load=True, **kwargs)


def test_inputs_take_the_declared_dtype_like_core_ml():
    @mb.program(input_specs=[mb.TensorSpec(shape=(3,), dtype=types.int32),
                             mb.TensorSpec(shape=(3,), dtype=types.fp16)], opset_version=ct.target.iOS16)
    def prog(i, h):
        return mb.cast(x=i, dtype="fp32"), mb.cast(x=h, dtype="fp32")

    model = _convert(prog, target=ct.target.iOS16)
    feed = kiln_backend.convert_inputs(model, {"i": np.array([1.9, -1.9, 2.0], np.float32),
                                               "h": np.array([0.1, 1 / 3, 2049.0], np.float32)})
    assert feed["i"].dtype == np.int32 and feed["i"].tolist() == [1, -1, 2]  # truncation toward zero
    assert feed["h"].dtype == np.float16
    assert feed["h"].tolist() == np.array([0.1, 1 / 3, 2049.0]).astype(np.float16).tolist()


def test_fp16_typed_program_runs_in_fp16_under_the_fp32_backend():
    @mb.program(input_specs=[mb.TensorSpec(shape=(2,), dtype=types.fp16)], opset_version=ct.target.iOS16)
    def prog(x):
        return mb.add(x=x, y=np.float16(1e-3))

    model = _convert(prog, target=ct.target.iOS16)
    loaded = kiln_backend.loaded_model(model)
    assert kiln_backend.has_fp16_tensors(loaded)
    assert kiln_backend.kiln_precision("fp32", loaded) == "fp16"
    case = CaseRecord(precision="fp32", case_id="t")
    token = CURRENT_CASE.set(case)
    try:
        out = kiln_backend.predict(model, {"x": np.array([1.0, 2.0], np.float32)})
    finally:
        CURRENT_CASE.reset(token)
    assert case.runs and case.runs[0]["precision"] == "fp16" and "add" in case.runs[0]["ops"]
    expected = (np.float16(1.0) + np.float16(1e-3)).astype(np.float16)
    assert list(out.values())[0][0] == expected


def test_image_input_becomes_the_pixel_buffer_in_the_declared_colour_layout():
    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 3, 2, 2))])
    def prog(x):
        return mb.mul(x=x, y=np.float32(1.0))

    pixels = np.arange(12, dtype=np.uint8).reshape(2, 2, 3) * 10
    image = Image.fromarray(pixels, "RGB")
    bgr = _convert(prog, inputs=[ct.ImageType(name="x", shape=(1, 3, 2, 2),
                                              color_layout=ct.colorlayout.BGR)])
    out = kiln_backend.predict(bgr, {"x": image})
    np.testing.assert_array_equal(list(out.values())[0][0], pixels.transpose(2, 0, 1)[::-1].astype(np.float32))


def test_state_starts_at_zero_and_carries_over_predictions():
    @mb.program(input_specs=[mb.StateTensorSpec(shape=(2,), dtype=types.fp16),
                             mb.TensorSpec(shape=(2,), dtype=types.fp16)], opset_version=ct.target.iOS18)
    def prog(acc, x):
        total = mb.add(x=mb.read_state(input=acc), y=x)
        mb.coreml_update_state(state=acc, value=total)
        return mb.read_state(input=acc)

    model = _convert(prog, precision=ct.precision.FLOAT16, target=ct.target.iOS18)
    state = kiln_backend.KilnState(kiln_backend.loaded_model(model))
    assert state.read_state("acc").tolist() == [0.0, 0.0]
    for expected in ([1.0, 2.0], [2.0, 4.0]):
        out = kiln_backend.predict(model, {"x": np.array([1.0, 2.0], np.float32)}, state)
        assert list(out.values())[0].tolist() == expected
    assert state.read_state("acc").tolist() == [2.0, 4.0]


def test_a_runtime_error_surfaces_as_core_ml_prediction_error():
    # a validated out-of-bounds index fails the prediction (an unvalidated one reads 0)
    @mb.program(input_specs=[mb.TensorSpec(shape=(2,)), mb.TensorSpec(shape=(1,), dtype=types.int32)],
                opset_version=ct.target.iOS17)
    def prog(x, i):
        return mb.gather(x=x, indices=i, validate_indices=True)

    model = _convert(prog, target=ct.target.iOS17)
    with pytest.raises(RuntimeError, match="Unable to compute the prediction using ML Program"):
        kiln_backend.predict(model, {"x": np.ones(2, np.float32), "i": np.array([5], np.float32)})
