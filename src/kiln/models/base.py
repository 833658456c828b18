"""What a model family declares: how to load its source, which components it exports, the
traceable wrapper of each component, and example inputs matching the component's fixed contract."""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from kiln.config import ComponentConfig, ModelConfig, TensorSpec
from kiln.errors import ContractError, ModelError
from kiln.sources import SourceRecord

NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "int32": np.int32}


class ModelFamily(abc.ABC):
    """Base class of every family module's ``FAMILY`` object."""

    #: family id, equal to the module name
    name: str
    #: the component names this family knows how to build
    components: tuple[str, ...]

    @abc.abstractmethod
    def load_source(self, record: SourceRecord) -> Any:
        """Load the source model (e.g. a torch module) from a fetched, verified source."""

    @abc.abstractmethod
    def build_component(self, source: Any, component: ComponentConfig) -> torch.nn.Module:
        """A pure, traceable ``nn.Module`` whose ``forward`` takes the component's inputs in
        contract order and returns its outputs in contract order."""

    def example_inputs(self, component: ComponentConfig, seed: int = 0) -> dict[str, np.ndarray]:
        """Inputs matching the contract, for tracing (values matter only for data-dependent code)."""
        rng = np.random.default_rng(seed)
        out = {}
        for spec in component.inputs:
            if spec.dtype == "int32":
                out[spec.name] = rng.integers(0, 2, size=spec.shape).astype(np.int32)
            else:
                out[spec.name] = (0.1 * rng.standard_normal(spec.shape)).astype(NUMPY_DTYPES[spec.dtype])
        return out

    # -- validation hooks: how the component is driven with real inputs, and what the task measures --

    #: sample rate of the audio the family's components consume
    sample_rate: int = 16_000
    #: seconds of validation audio (espeak-ng speech mixed with silence and noise)
    validation_seconds: float = 20.0

    def validation_audio(self, component: ComponentConfig, seed: int = 0) -> np.ndarray:
        from kiln.audio import speech_mix

        return speech_mix(self.validation_seconds, rate=self.sample_rate, seed=seed)

    def stream(self, component: ComponentConfig, predict: Callable[[dict], dict],
               audio: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Drive ``predict`` (one backend) over ``audio`` as an app would, carrying any state from
        the backend's own outputs; return the outputs of every step."""
        raise NotImplementedError(f"{self.name} does not define how to stream {component.name}")

    def task_metrics(self, component: ComponentConfig, reference: list[dict],
                     candidate: list[dict]) -> dict:
        """Task-level agreement of a backend's steps with the reference steps (e.g. VAD decisions)."""
        return {}

    def plot_series(self, component: ComponentConfig, steps: list[dict]) -> tuple[str, np.ndarray] | None:
        """(label, one value per step) to plot over time, e.g. the speech probability."""
        return None

    def end_to_end(self, model: ModelConfig, backends: Mapping[str, Mapping[str, Callable[[dict], dict]]],
                   audio: np.ndarray) -> dict | None:
        """Task-level check across components (e.g. greedy decoding through every ASR component).

        ``backends`` maps a backend name (``torch_cpu``, ``kiln_fp32``, ``kiln_fp16``, …) to
        ``{component name: predict}``. Returns a JSON-able dict per backend (e.g. decoded tokens,
        agreement with ``torch_cpu``), recorded in metadata.json under ``end_to_end``; ``None`` when
        the family has no cross-component task.
        """
        return None

    def build_random(self, architecture: str, *, seed: int, overrides: Mapping[str, Any],
                     out_dir: Path) -> Path:
        """Write a random-initialised checkpoint of ``architecture``; families without a synthetic
        variant refuse."""
        raise ModelError(f"model family '{self.name}' has no random-initialised architectures")

    def check_component(self, component: ComponentConfig) -> None:
        if component.name not in self.components:
            raise ModelError(f"model family '{self.name}' has no component '{component.name}' "
                             f"(it builds: {', '.join(self.components)})")


def check_outputs(component: ComponentConfig, outputs: tuple[torch.Tensor, ...] | list) -> None:
    """Raise :class:`ContractError` when a wrapper's outputs do not match the configured contract."""
    expected = component.outputs
    if len(outputs) != len(expected):
        raise ContractError(f"{component.model}/{component.name}: wrapper returned {len(outputs)} "
                            f"outputs, the contract declares {len(expected)}: "
                            f"{', '.join(t.name for t in expected)}")
    for spec, value in zip(expected, outputs):
        if tuple(value.shape) != spec.shape:
            raise ContractError(f"{component.model}/{component.name}: output '{spec.name}' has shape "
                                f"{list(value.shape)}, the contract declares {list(spec.shape)}")


def check_inputs(specs: tuple[TensorSpec, ...], values: Mapping[str, np.ndarray], where: str) -> None:
    expected = {s.name: s for s in specs}
    if set(values) != set(expected):
        raise ContractError(f"{where}: inputs {sorted(values)} do not match the contract "
                            f"{[f'{s.name} {list(s.shape)} {s.dtype}' for s in specs]}")
    for name, spec in expected.items():
        arr = np.asarray(values[name])
        if tuple(arr.shape) != spec.shape:
            raise ContractError(f"{where}: input '{name}' has shape {list(arr.shape)}, expected "
                                f"{list(spec.shape)}")
