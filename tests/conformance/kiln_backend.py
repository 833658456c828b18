"""kiln's executor standing in for Apple's Core ML runtime under coremltools' MIL op test suite.

Off macOS, ``ct.convert`` returns an ``MLModel`` without a runtime proxy, so ``predict`` and
``make_state`` cannot run. :func:`predict` and :class:`KilnState` give such a model a runtime: the
converted ML Program is saved as an ``.mlpackage``, loaded with :func:`kiln.mil.load_model` and run
by its plan in the precision of the suite's backend.

What Core ML does to the values it is given, and what is done here the same way:

- **tensor inputs** arrive as numpy arrays (the suite casts them to float32 first, as coremltools
  does for its ``MLMultiArray`` bridge); Core ML converts each to the dtype the model declares
  (fp16: round to nearest, int32: C cast, i.e. truncation toward zero). A scalar becomes shape (1,).
- **image inputs** (``ImageType``, a PIL image) become the pixel buffer Core ML hands the program:
  ``(1, C, H, W)`` float32 with the channels in the declared colour layout (RGB, BGR or one
  grayscale channel, ``GRAYSCALE_FLOAT16`` read as float). The ``scale``/``bias`` preprocessing is
  part of the converted program itself, so it runs on kiln like any other op.
- **states** (iOS18) start as zeros, as ``MLModel.make_state`` allocates them; every prediction
  passes the state's current value to kiln's plan as the state input and keeps
  ``Prediction.states`` (the value after the program's ``write_state`` ops) for the next one.
"""

from __future__ import annotations

import contextvars
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kiln.mil import MilError, load_model

# Core ML feature types -> the numpy dtype Core ML converts an input array to.
_ARRAY_DTYPES = {
    "FLOAT32": np.float32,
    "FLOAT16": np.float16,
    "DOUBLE": np.float64,
    "INT32": np.int32,
    "INT8": np.int8,
}


@dataclass
class CaseRecord:
    """What one suite case ran on kiln: the precision of every run, the program's opset and ops."""

    precision: str = "fp32"
    case_id: str = ""
    runs: list[dict] = field(default_factory=list)
    # the suite's radar skips/xfails the case went past, [kind, reason] each (plugin._radar_noted)
    radar_stops: list[list[str]] = field(default_factory=list)
    reached_runtime: bool = False  # predict was called: the case built a program for a runtime


# The case being executed (set by the plugin around each test call).
CURRENT_CASE: contextvars.ContextVar[CaseRecord | None] = contextvars.ContextVar("kiln_case", default=None)


class KilnState:
    """``MLState`` stand-in: the value of every state of a model, zeros until a prediction writes."""

    def __init__(self, loaded):
        self._values = {}
        for spec in loaded.inputs():
            if spec.name in _state_names(loaded):
                shape = tuple(d if d is not None else 1 for d in spec.shape)
                self._values[spec.name] = np.zeros(shape, dtype=spec.numpy_dtype)

    def read_state(self, name: str) -> np.ndarray:
        if name not in self._values:
            raise RuntimeError(f"model has no state '{name}' (states: {sorted(self._values)})")
        return self._values[name].copy()

    def write_state(self, name: str, value) -> None:
        current = self.read_state(name)
        value = np.asarray(value)
        if value.shape != current.shape:
            raise RuntimeError(f"state '{name}' has shape {list(current.shape)}, got {list(value.shape)}")
        self._values[name] = value.astype(current.dtype)


def _state_names(loaded) -> set[str]:
    return {
        value.name
        for value in loaded.program.functions[loaded.default_function].inputs
        if value.type.WhichOneof("type") == "stateType"
    }


def loaded_model(mlmodel):
    """The kiln model of ``mlmodel``: saved once to a private folder that lives as long as it."""
    cached = getattr(mlmodel, "_kiln_loaded", None)
    if cached is None:
        folder = tempfile.TemporaryDirectory(prefix="kiln-conformance-")
        path = Path(folder.name) / "model.mlpackage"
        mlmodel.save(str(path))
        cached = (folder, load_model(path))
        mlmodel._kiln_loaded = cached
    return cached[1]


def image_to_array(image, image_type) -> np.ndarray:
    """A PIL image as the ``(1, C, H, W)`` float32 buffer Core ML feeds an ``ImageType`` input."""
    from coremltools.proto import FeatureTypes_pb2

    kinds = FeatureTypes_pb2.ImageFeatureType
    space = image_type.colorSpace
    if space == kinds.GRAYSCALE:
        pixels = np.asarray(image.convert("L"), dtype=np.float32)[None]
    elif space == kinds.GRAYSCALE_FLOAT16:
        pixels = np.asarray(image, dtype=np.float32)[None]
    else:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1)
        pixels = rgb[::-1] if space == kinds.BGR else rgb
    return np.ascontiguousarray(pixels[None])


def convert_inputs(mlmodel, inputs) -> dict[str, np.ndarray]:
    """``inputs`` converted to the declared types as Core ML converts them (see the module doc)."""
    described = {feature.name: feature.type for feature in mlmodel._spec.description.input}
    converted = {}
    for name, value in inputs.items():
        feature = described.get(name)
        kind = feature.WhichOneof("Type") if feature is not None else None
        if kind == "imageType":
            converted[name] = image_to_array(value, feature.imageType)
            continue
        array = np.asarray(value)
        if kind == "multiArrayType":
            type_name = feature.multiArrayType.ArrayDataType.Name(feature.multiArrayType.dataType)
            array = array.astype(_ARRAY_DTYPES[type_name])
        if array.ndim == 0:
            array = array.reshape(1)
        converted[name] = array
    return converted


def has_fp16_tensors(loaded) -> bool:
    """True when the program declares any fp16 tensor (an input, a state or an op output)."""
    from coremltools.proto import MIL_pb2

    fp16 = MIL_pb2.DataType.FLOAT16

    def typed_fp16(value_type) -> bool:
        kind = value_type.WhichOneof("type")
        if kind == "stateType":
            return typed_fp16(value_type.stateType.wrappedType)
        return kind == "tensorType" and value_type.tensorType.dataType == fp16

    def walk(block) -> bool:
        return any(
            any(typed_fp16(out.type) for out in op.outputs) or any(walk(b) for b in op.blocks)
            for op in block.operations
        )

    function = loaded.program.functions[loaded.default_function]
    return any(typed_fp16(v.type) for v in function.inputs) or walk(loaded.block())


def kiln_precision(suite_precision: str, loaded) -> str:
    """kiln's precision mode for a suite backend precision.

    The suite's fp16 backend is kiln's fp16 emulation, its fp32 backend kiln's fp32 reference, except
    for a program whose tensors are typed fp16 (fp16 inputs or parameters under the fp32 backend):
    ML Programs have typed execution, and Core ML computes an fp16-typed op in fp16 (coremltools
    "Typed Execution" guide), which is what kiln's fp16 mode emulates; kiln's fp32 mode would widen
    those tensors to fp32, which Apple's runtime does not do."""
    if suite_precision == "fp16" or has_fp16_tensors(loaded):
        return "fp16"
    return "fp32"


def predict(mlmodel, data, state: KilnState | None = None) -> dict:
    """``MLModel.predict`` on kiln's executor; records the run in the current case."""
    case = CURRENT_CASE.get()
    if case is not None:
        case.reached_runtime = True
    loaded = loaded_model(mlmodel)
    precision = kiln_precision(case.precision if case is not None else "fp32", loaded)
    plan = loaded.plan(precision=precision)
    if case is not None:
        case.runs.append(
            {"precision": precision, "opset": loaded.opset(), "ops": sorted(loaded.op_histogram())}
        )
    feed = convert_inputs(mlmodel, data)
    if state is not None:
        for name in plan.state_names:
            feed[name] = state.read_state(name)
    # the plan's dtype contract is the MIL function's; the description's fp32/int32 may be wider
    for spec in plan.inputs:
        if spec.name in feed and isinstance(feed[spec.name], np.ndarray) and spec.type is not None:
            feed[spec.name] = feed[spec.name].astype(spec.numpy_dtype, copy=False)
    try:
        prediction = plan.run(feed)
    except MilError as exc:
        # what coremltools raises when Core ML fails a prediction (the suite matches this text)
        raise RuntimeError(f"Unable to compute the prediction using ML Program (kiln): {exc}") from exc
    if state is not None:
        for name, value in prediction.states.items():
            state.write_state(name, value)
    return dict(prediction)
