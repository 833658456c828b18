"""Backends that run one component: the source (torch, CPU), kiln's executor (fp32 reference and fp16
emulation), and Apple's Core ML runtime per compute unit where it exists (macOS).

A registry of small factories, one per backend kind. Each returns a :class:`Backend` whose
``predict`` maps contract input names to numpy arrays and back, or ``None`` with the reason when the
backend is absent on this machine: absent backends are recorded as null, never invented.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np

from kiln.config import ComponentConfig

if TYPE_CHECKING:
    import torch

Arrays = Mapping[str, np.ndarray]


@dataclass
class Backend:
    name: str                 # e.g. "torch_cpu", "kiln_fp32", "coreml_cpuAndNeuralEngine"
    kind: str                 # "source", "kiln", "apple"
    precision: str | None     # "fp32"/"fp16" for kiln, None otherwise
    predict: Callable[[Arrays], dict[str, np.ndarray]]


@dataclass
class Absent:
    name: str
    kind: str
    reason: str


def torch_backend(wrapper: torch.nn.Module, component: ComponentConfig) -> Backend:
    import torch   # here, not at the top: the jobs that never run torch (metadata, summaries) skip its ~1.5 s import

    names_in = [t.name for t in component.inputs]
    names_out = [t.name for t in component.outputs]

    def predict(inputs: Arrays) -> dict[str, np.ndarray]:
        with torch.no_grad():
            outputs = wrapper(*(torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in names_in))
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        return {n: o.detach().numpy().copy() for n, o in zip(names_out, outputs)}

    return Backend("torch_cpu", "source", None, predict)


def kiln_backend(artifact: Path, precision: str) -> Backend:
    from kiln.mil import load_model

    plan = load_model(artifact).plan(precision=precision)

    def predict(inputs: Arrays) -> dict[str, np.ndarray]:
        return dict(plan.run(inputs))

    return Backend(f"kiln_{precision}", "kiln", precision, predict)


COMPUTE_UNITS = {"cpuOnly": "CPU_ONLY", "cpuAndGPU": "CPU_AND_GPU", "cpuAndNeuralEngine": "CPU_AND_NE",
                 "all": "ALL"}


def apple_available() -> str | None:
    """None when Apple's Core ML runtime can run models here, else the reason it cannot."""
    if platform.system() != "Darwin":
        return f"Apple's Core ML runtime exists only on macOS (this is {platform.system()})"
    try:
        import coremltools.libcoremlpython  # noqa: F401
    except ImportError as exc:
        return f"coremltools has no native runtime binding here: {exc}"
    return None


def apple_backend(artifact: Path, compute_unit: str) -> Backend | Absent:
    name = f"coreml_{compute_unit}"
    reason = apple_available()
    if reason:
        return Absent(name, "apple", reason)
    import coremltools as ct

    model = ct.models.MLModel(str(artifact), compute_units=getattr(ct.ComputeUnit, COMPUTE_UNITS[compute_unit]))

    def predict(inputs: Arrays) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in model.predict(dict(inputs)).items()}

    return Backend(name, "apple", None, predict)
