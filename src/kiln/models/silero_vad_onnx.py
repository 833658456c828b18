"""Silero VAD from the ONNX graph the ``silero-vad`` package ships, through onnx2torch.

The source is an ``onnx`` source kind (``kiln.sources.onnx_graph``): the graph's inputs are bound
(``input [1, 576]``, ``state [2, 1, 128]``, ``sr = 16000``), which folds the graph's ``If`` on the
sample rate to its 16 kHz branch; onnx2torch turns what is left into a ``torch.fx.GraphModule``.
This family only adapts that module to the same contract as :mod:`kiln.models.silero_vad` (LSTM
``hidden_state``/``cell_state`` as separate inputs and outputs, where the graph stacks them into one
``state``), and reuses that family's validation speech, decision metric and plot.

Parity is three-way: the reference job's torch outputs come from the onnx2torch module, and the
parity job also streams the speech through **onnxruntime on the original, unmodified .onnx file**
(``source_runtime``), so every Core ML backend is compared with both, and onnxruntime with torch.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from kiln.errors import ModelError
from kiln.models import silero_vad
from kiln.models.spec import FamilySpec
from kiln.sources import SourceRecord, onnx_graph

#: the graph interface (Silero v5/v6 ONNX): audio and stacked LSTM state in, probability and state out
GRAPH_INPUTS = ("input", "state")
GRAPH_OUTPUTS = ("output", "stateN")


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


def _ort_step(session, constants: dict):
    """One 512-sample step on onnxruntime, in the contract's terms."""
    dtypes = {i.name: i.type for i in session.get_inputs()}
    fixed = {k: np.asarray(v, dtype=np.int64 if "int64" in dtypes.get(k, "") else np.float32)
             for k, v in constants.items()}

    def step(audio, h, c):
        probability, state = session.run(list(GRAPH_OUTPUTS), {"input": audio.astype(np.float32),
                                                                "state": np.stack([h, c]).astype(np.float32),
                                                                **fixed})
        return probability.reshape(1, 1, 1), state[0], state[1]

    return step


def source_runtime(facts, component):
    """onnxruntime on the original .onnx file, streaming windows like the exported component
    (``steps`` steps, noisy-OR), after checking the file still has the fetched sha256."""
    from kiln.sources import SourceFile, verify_file
    from kiln.validate.backends import Backend

    info = facts["onnxruntime"]
    path = verify_file(SourceFile(role="checkpoint", path=info["path"], sha256=info["sha256"], size=0))
    step = _ort_step(onnx_graph.session(path), info["constants"])
    steps = silero_vad.steps_of(component)
    size = silero_vad.CONTEXT_SAMPLES + silero_vad.CHUNK_SAMPLES

    def predict(inputs):
        audio, h, c = inputs["audio_input"], inputs["hidden_state"], inputs["cell_state"]
        none_speech = np.ones((1, 1, 1), dtype=np.float32)
        for i in range(steps):
            start = i * silero_vad.CHUNK_SAMPLES
            probability, h, c = step(audio[:, start:start + size], h, c)
            none_speech = none_speech * (1.0 - probability)
        probability = probability if steps == 1 else 1.0 - none_speech
        return {"vad_output": probability, "new_hidden_state": h, "new_cell_state": c}

    return Backend("onnxruntime", "source", None, predict)


def vad_component(name: str):
    return dataclasses.replace(silero_vad.vad_component(name), wrapper=window)


FAMILY = FamilySpec(name="silero_vad_onnx", load=load, facts=facts,
                    components=(vad_component("unified"), vad_component("unified_256ms")),
                    source_runtime=source_runtime)
