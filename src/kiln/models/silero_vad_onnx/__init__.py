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

from kiln.family.spec import DeferredPart, FamilySpec
from kiln.models import silero_vad
from kiln.models.silero_vad_onnx import judge

#: the network part, imported when a hook is first called (torch: judging jobs never import it); not
#: named ``build``, which would hide the submodule from ``from ... import build``
build_part = DeferredPart("kiln.models.silero_vad_onnx.build")


def vad_component(name: str = "unified"):
    return dataclasses.replace(silero_vad.vad_component(name), wrapper=build_part.window)


FAMILY = FamilySpec(name="silero_vad_onnx", load=build_part.load, facts=build_part.facts, components=(vad_component(),),
                    source_runtime=judge.source_runtime)
