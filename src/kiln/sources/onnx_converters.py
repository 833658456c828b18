"""onnx2torch converters kiln registers for ONNX ops onnx2torch 1.5.15 lacks.

Like the torch-op converters kiln registers with coremltools, each is one small function added to
onnx2torch's own registry. They cover the opset-18 forms of ops whose earlier form onnx2torch
converts (opset 18 moved ``axes`` of the Reduce ops to an input, added ``axes`` to Pad and
``num_outputs`` to Split); a form they do not cover raises :class:`kiln.foundation.errors.ConversionError`
naming the node. ``silero_vad_op18_ifless.onnx`` needs all three.
"""

from __future__ import annotations

from kiln.foundation.errors import ConversionError

_REGISTERED = False


def register() -> None:
    """Add kiln's converters to onnx2torch's registry (once per process)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from onnx2torch.node_converters.reduce import OnnxReduceStaticAxes
    from onnx2torch.node_converters.registry import add_converter
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value

    def const_list(node, index: int, what: str) -> list[int] | None:
        if len(node.input_values) <= index or not node.input_values[index]:
            return None
        try:
            return [int(v) for v in get_const_value(node.input_values[index], graph_of[node]).reshape(-1).tolist()]
        except KeyError:
            raise ConversionError(f"{node.operation_type} node '{node.name}': its {what} input "
                                  f"'{node.input_values[index]}' is not a constant") from None

    graph_of: dict = {}
    @add_converter(operation_type="Pad", version=18)
    def pad_18(node, graph):
        """Pad-18 with constant ``pads`` and no ``axes`` (onnx2torch's Pad-13 module refuses reflect
        padding of a 2-D tensor, which Silero's STFT front end does)."""
        graph_of[node] = graph
        if len(node.input_values) > 3 and node.input_values[3]:
            raise ConversionError(f"Pad node '{node.name}': the opset-18 'axes' input is not supported")
        pads = const_list(node, 1, "pads")
        value = 0.0
        if len(node.input_values) > 2 and node.input_values[2]:
            value = float(get_const_value(node.input_values[2], graph).reshape(-1)[0])
        mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}.get(
            node.attributes.get("mode", "constant"))
        if mode is None:
            raise ConversionError(f"Pad node '{node.name}': mode {node.attributes.get('mode')!r} is not supported")
        return OperationConverterResult(
            torch_module=_StaticPad(_torch_pads(pads), mode, value),
            onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values))

    @add_converter(operation_type="ReduceMean", version=18)
    def reduce_mean_18(node, graph):
        """ReduceMean-18 with constant ``axes`` (an input since opset 18) is ReduceMean-13's static form."""
        graph_of[node] = graph
        axes = const_list(node, 1, "axes")
        if not axes and node.attributes.get("noop_with_empty_axes", 0):
            raise ConversionError(f"ReduceMean node '{node.name}': noop_with_empty_axes is not supported")
        return OperationConverterResult(
            torch_module=OnnxReduceStaticAxes(operation_type="ReduceMean", axes=axes,
                                              keepdims=node.attributes.get("keepdims", 1)),
            onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values))

    @add_converter(operation_type="Split", version=18)
    def split_18(node, graph):
        """Split-18: explicit ``split`` sizes as in Split-13, or ``num_outputs`` equal parts."""
        graph_of[node] = graph
        axis = node.attributes.get("axis", 0)
        sizes = const_list(node, 1, "split")
        module = _EqualSplit(len(node.output_values), axis) if sizes is None else _FixedSplit(sizes, axis)
        return OperationConverterResult(
            torch_module=module,
            onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values))

    _REGISTERED = True


def _module_classes():
    import torch
    from torch import nn

    class FixedSplit(nn.Module):
        def __init__(self, sizes, axis):
            super().__init__()
            self.sizes, self.axis = list(sizes), axis

        def forward(self, x):
            return torch.split(x, self.sizes, dim=self.axis)

    class EqualSplit(nn.Module):
        """``num_outputs`` parts; ONNX makes the last one smaller when the axis does not divide."""

        def __init__(self, parts, axis):
            super().__init__()
            self.parts, self.axis = parts, axis

        def forward(self, x):
            size = -(-x.shape[self.axis] // self.parts)
            return torch.split(x, size, dim=self.axis)

    class StaticPad(nn.Module):
        def __init__(self, pads, mode, value):
            super().__init__()
            self.pads, self.mode, self.value = list(pads), mode, value

        def forward(self, x):
            if self.mode == "constant":
                return torch.nn.functional.pad(x, self.pads, mode="constant", value=self.value)
            return torch.nn.functional.pad(x, self.pads, mode=self.mode)

    return FixedSplit, EqualSplit, StaticPad


def _torch_pads(onnx_pads: list[int]) -> list[int]:
    """ONNX ``[b1, b2, ..., e1, e2, ...]`` -> torch ``[bn, en, ..., b1, e1]``, without the leading
    dimensions' all-zero pairs (torch's reflect/replicate pad only the trailing 1-3 dimensions)."""
    half = len(onnx_pads) // 2
    pairs = list(zip(onnx_pads[:half], onnx_pads[half:]))
    while pairs and pairs[0] == (0, 0):
        pairs.pop(0)
    return [v for pair in reversed(pairs) for v in pair]


_FixedSplit, _EqualSplit, _StaticPad = _module_classes()
