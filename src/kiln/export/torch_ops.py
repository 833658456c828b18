"""Converters for torch ops that coremltools 9.0 lacks, registered in one place.

coremltools 9.0 was tested with torch up to 2.7; torch 2.13 traces contain ops it has no converter
for. Each converter here is a small function registered with ``register_torch_op`` and has its own
test (``tests/export/test_torch_ops.py``). :func:`register` is idempotent and is called by the
exporter before converting.
"""

from __future__ import annotations

import math

import numpy as np

_REGISTERED = False

#: torch op name -> what it lowers to, for docs and ``kiln inspect``-style listings
CONVERTERS: dict[str, str] = {}


def _converter(torch_name: str, lowering: str):
    def record(fn):
        CONVERTERS[torch_name] = lowering
        fn.torch_name = torch_name
        return fn
    return record


@_converter("unsafe_chunk", "split with equal sizes (last smaller), as aten::chunk")
def unsafe_chunk(context, node):
    """``aten::unsafe_chunk(Tensor self, int chunks, int dim=0) -> Tensor[]``.

    Emitted when torch decomposes ``lstm_cell``/``nn.LSTMCell`` into gate math during tracing.
    Same semantics as ``chunk``: ``ceil(size / chunks)`` per piece, the last one may be smaller.
    """
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs

    inputs = _get_inputs(context, node, min_expected=2)
    x = inputs[0]
    chunks = int(inputs[1].val)
    dim = int(inputs[2].val) if len(inputs) > 2 else 0
    if dim < 0:
        dim += x.rank
    total = x.shape[dim]
    size = int(math.ceil(total / chunks))
    split_sizes = [size] * (total // size)
    if total - sum(split_sizes) > 0:
        split_sizes.append(total - sum(split_sizes))
    pieces = mb.split(x=x, split_sizes=split_sizes, axis=dim, name=node.name)
    context.add(pieces, torch_name=node.name)


@_converter("unsafe_split", "split into pieces of split_size (last smaller), as aten::split")
def unsafe_split(context, node):
    """``aten::unsafe_split(Tensor self, SymInt split_size, int dim=0) -> Tensor[]``.

    Emitted when a scripted ``nn.LSTMCell`` runs under ``make_fx`` (kiln.models.plain specialises a
    TorchScript file that way): its gates are split with ``unsafe_split``, which coremltools 9.0 lacks.
    """
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs

    inputs = _get_inputs(context, node, min_expected=2)
    x = inputs[0]
    size = int(inputs[1].val)
    dim = int(inputs[2].val) if len(inputs) > 2 else 0
    if dim < 0:
        dim += x.rank
    total = x.shape[dim]
    split_sizes = [size] * (total // size)
    if total % size:
        split_sizes.append(total % size)
    if len(split_sizes) == 1:   # MIL's split needs two pieces or more: one piece is the tensor itself
        context.add([mb.identity(x=x, name=node.name)], torch_name=node.name)
        return
    pieces = mb.split(x=x, split_sizes=split_sizes, axis=dim, name=node.name)
    context.add(pieces, torch_name=node.name)


@_converter("new_ones", "fill with 1, cast to the requested dtype (or self's)")
def new_ones(context, node):
    """``aten::new_ones(Tensor self, SymInt[] size, ScalarType? dtype, ...)``.

    Emitted by transformers' ALBERT (the default ``token_type_ids``/mask buffers) when traced.
    coremltools 9.0 converts ``new_zeros`` but not ``new_ones``.
    """
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs
    from coremltools.converters.mil.frontend.torch.utils import NUM_TO_DTYPE_STRING
    from coremltools.converters.mil.mil import types

    inputs = _get_inputs(context, node, min_expected=2)
    x, shape = inputs[0], inputs[1]
    if isinstance(shape, list):
        shape = mb.concat(values=shape, axis=0)
    dtype = inputs[2] if len(inputs) > 2 and inputs[2] is not None and inputs[2].val is not None else None
    dtype_name = NUM_TO_DTYPE_STRING[int(dtype.val)] if dtype is not None else types.builtin_to_string(x.dtype)
    if shape.val is not None:  # static size, possibly [] (a scalar): a constant
        numpy_dtype = types.nptype_from_builtin(types.string_to_builtin(dtype_name))
        value = np.ones(tuple(int(d) for d in np.ravel(shape.val)), dtype=numpy_dtype)
        context.add(mb.const(val=value, name=node.name), torch_name=node.name)
        return
    ones = mb.fill(shape=mb.cast(x=shape, dtype="int32"), value=1.0)
    if dtype_name == "fp32":
        context.add(mb.identity(x=ones, name=node.name), torch_name=node.name)
    else:
        context.add(mb.cast(x=ones, dtype=dtype_name, name=node.name), torch_name=node.name)


def register() -> None:
    """Register every converter of this module with coremltools' torch frontend (once)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    for fn in (unsafe_chunk, unsafe_split, new_ones):
        # a newer coremltools may ship its own converter: prefer it
        if _TORCH_OPS_REGISTRY.get_func(fn.torch_name) is None:
            _TORCH_OPS_REGISTRY.set_func_by_name(fn, fn.torch_name)
    _REGISTERED = True
