"""Each registered torch-op converter, on its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kiln.export import torch_ops


class UnsafeChunk(torch.nn.Module):
    def __init__(self, chunks: int, dim: int):
        super().__init__()
        self.chunks, self.dim = chunks, dim

    def forward(self, x):
        pieces = torch.unsafe_chunk(x, self.chunks, self.dim)
        return tuple(p * (i + 1) for i, p in enumerate(pieces))


def _convert(module, shape):
    import coremltools as ct

    torch_ops.register()
    traced = torch.jit.trace(module, torch.zeros(shape))
    assert any(n.kind() == "aten::unsafe_chunk" for n in traced.graph.nodes())
    return ct.convert(traced, inputs=[ct.TensorType(name="x", shape=shape, dtype=np.float32)],
                      convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
                      compute_precision=ct.precision.FLOAT32, skip_model_load=True)


@pytest.mark.parametrize("shape,chunks,dim,sizes", [
    ((2, 12), 4, 1, [3, 3, 3, 3]),
    ((2, 10), 4, -1, [3, 3, 3, 1]),   # uneven: last piece smaller, negative axis
    ((6, 5), 3, 0, [2, 2, 2]),
])
def test_unsafe_chunk_lowers_to_split(shape, chunks, dim, sizes):
    mlmodel = _convert(UnsafeChunk(chunks, dim), shape)
    ops = mlmodel._mil_program.functions["main"].operations
    (split,) = [op for op in ops if op.op_type == "split"]
    assert list(split.split_sizes.val) == sizes
    assert split.axis.val in (dim, dim % len(shape))
    outputs = [o.shape for o in mlmodel._mil_program.functions["main"].outputs]
    expected = [tuple(shape[:dim % len(shape)]) + (s,) + tuple(shape[dim % len(shape) + 1:]) for s in sizes]
    assert outputs == expected


def test_register_is_idempotent():
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    torch_ops.register()
    torch_ops.register()
    assert _TORCH_OPS_REGISTRY.get_func("unsafe_chunk") is not None
    assert set(torch_ops.CONVERTERS) == {"unsafe_chunk"}
