"""The ONNX graph's interface, torch-free: the build part adapts it, the judge part runs it."""

from __future__ import annotations

#: the graph interface (Silero v5/v6 ONNX): audio and stacked LSTM state in, probability and state out
GRAPH_INPUTS = ("input", "state")
GRAPH_OUTPUTS = ("output", "stateN")
