"""kiln's reference executor of Core ML ML Programs.

Apple's runtime does not exist on Linux, so kiln runs a saved model itself::

    from kiln.mil import load_model
    model = load_model("unified.mlpackage")          # or an .mlmodelc
    plan = model.plan(precision="fp32")               # compile once ("fp16" emulates fp16 storage)
    outputs = plan.run({"audio_input": x, ...})      # run many times; outputs.precision == "fp32"

The program is the MILSpec ``Program`` protobuf; every op maps to a small numpy/torch function
registered per op type and opset (see :mod:`kiln.mil.ops`).
:mod:`kiln.mil.compiler` builds a plan (op compilation, :mod:`~kiln.mil.constant_pool`,
:mod:`~kiln.mil.fusion`, :mod:`~kiln.mil.liveness`) out of :mod:`~kiln.mil.steps`;
:mod:`kiln.mil.plan` runs it.
"""

from kiln.coreml.blob import BlobFile, BlobRecord
from .coverage import OpsetCoverage, coverage
from .dtypes import FP16, FP32, PRECISIONS
from .errors import (
    BlobFormatError,
    InputContractError,
    MilError,
    ModelFormatError,
    OpExecutionError,
    PrecisionError,
    UnsupportedModelError,
    UnsupportedOpError,
)
from .model import LoadedModel, load_model
from .compiler import build_plan
from .plan import ExecutionPlan
from .plan_io import IOSpec, Prediction
from .registry import OPSETS, lookup, register

__all__ = [
    "BlobFile",
    "BlobFormatError",
    "BlobRecord",
    "ExecutionPlan",
    "FP16",
    "FP32",
    "IOSpec",
    "InputContractError",
    "LoadedModel",
    "MilError",
    "ModelFormatError",
    "OPSETS",
    "OpExecutionError",
    "OpsetCoverage",
    "PRECISIONS",
    "Prediction",
    "PrecisionError",
    "UnsupportedModelError",
    "UnsupportedOpError",
    "build_plan",
    "coverage",
    "load_model",
    "lookup",
    "predict",
    "register",
]


def predict(model_path, inputs, precision: str = FP32, function: str | None = None) -> Prediction:
    """Load ``model_path``, build its plan and run it once on ``inputs``."""
    return load_model(model_path).predict(inputs, precision=precision, function=function)
