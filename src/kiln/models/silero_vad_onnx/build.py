"""Silero VAD from ONNX, the build part: the onnx2torch module adapted to the contract of
:mod:`kiln.models.silero_vad` (see the package docstring)."""

from __future__ import annotations

import torch
from torch import nn

from kiln.foundation.errors import ModelError
from kiln.models.silero_vad import build as silero_vad
from kiln.models.silero_vad_onnx.contract import GRAPH_INPUTS, GRAPH_OUTPUTS
from kiln.sources import SourceRecord, onnx_graph


class OnnxSource:
    """The converted graph and where it came from (for onnxruntime in the parity job)."""

    def __init__(self, graph: nn.Module, record: SourceRecord):
        self.graph = graph
        self.record = record


class OnnxVADStep(nn.Module):
    """One 512-sample step through the converted graph, with the state split into ``h`` and ``c``
    (the same signature as :class:`kiln.models.silero_vad.SileroVADNet`)."""

    def __init__(self, converted: nn.Module):
        super().__init__()
        # not ``graph``: coremltools resolves submodules by attribute on the traced module, where
        # ``graph`` is TorchScript's own graph
        self.converted = converted

    def forward(self, audio: torch.Tensor, hidden_state: torch.Tensor, cell_state: torch.Tensor):
        probability, state = self.converted(audio, torch.stack([hidden_state, cell_state]))
        return probability.reshape(1, 1, 1), state[0], state[1]


def _graph_interface(model) -> tuple[tuple[str, ...], tuple[str, ...]]:
    initializers = {i.name for i in model.graph.initializer}
    return (tuple(i.name for i in model.graph.input if i.name not in initializers),
            tuple(o.name for o in model.graph.output))


def load(record: SourceRecord) -> OnnxSource:
    path = record.file("static_graph")
    model = onnx_graph.load(path)
    interface = _graph_interface(model)
    if interface != (GRAPH_INPUTS, GRAPH_OUTPUTS):
        raise ModelError(f"{path}: graph inputs/outputs {interface} are not Silero VAD's "
                         f"{(GRAPH_INPUTS, GRAPH_OUTPUTS)} (after binding source.inputs)")
    return OnnxSource(onnx_graph.to_torch(model, path), record)


def facts(source: OnnxSource) -> dict:
    """Silero's constants, and the original graph for onnxruntime: its path, sha256 and the
    constants the fetch bound (fed to onnxruntime as inputs)."""
    original = next(f for f in source.record.files if f.role == "checkpoint")
    bound = source.record.details.get("inputs", {})
    return {**silero_vad.facts(source),
            "onnxruntime": {"path": original.path, "sha256": original.sha256,
                            "constants": {k: v["value"] for k, v in bound.items() if "value" in v}}}


def window(source: OnnxSource, component, facts) -> nn.Module:
    """``steps`` steps over one window (config option ``steps``), as the PyTorch-source family."""
    return silero_vad.window(OnnxVADStep(source.graph), component, facts)
