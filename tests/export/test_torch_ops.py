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
    assert set(torch_ops.CONVERTERS) == {"unsafe_chunk", "unsafe_split", "new_ones"}
    assert _TORCH_OPS_REGISTRY.get_func("new_ones") is not None


class NewOnes(torch.nn.Module):
    """``x.new_ones(...)`` with a static size, a size read from the input, and a scalar."""

    def forward(self, x, ids):
        static = x.new_ones((2, 3)) * 2.0
        dynamic = x.new_ones(x.shape[0], x.shape[1]) + x
        mask = ids.new_ones(ids.shape) * ids                 # int dtype kept
        scalar = x.new_ones(())
        return static, dynamic, mask, x * scalar


def test_new_ones_converts_and_runs(tmp_path):
    import coremltools as ct

    from kiln.export.package import save_mlpackage
    from kiln.mil import load_model

    torch_ops.register()
    x, ids = torch.randn(4, 5), torch.arange(6, dtype=torch.int32).view(2, 3)
    traced = torch.jit.trace(NewOnes(), (x, ids))
    assert any(n.kind() == "aten::new_ones" for n in traced.graph.nodes())
    mlmodel = ct.convert(traced, inputs=[ct.TensorType(name="x", shape=x.shape, dtype=np.float32),
                                         ct.TensorType(name="ids", shape=ids.shape, dtype=np.int32)],
                         outputs=[ct.TensorType(name=f"out{i}") for i in range(4)],
                         convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
                         compute_precision=ct.precision.FLOAT32, skip_model_load=True)
    got = load_model(save_mlpackage(mlmodel, tmp_path / "m.mlpackage")).predict({"x": x.numpy(), "ids": ids.numpy()})
    expected = NewOnes()(x, ids)
    for i, e in enumerate(expected):
        np.testing.assert_allclose(np.asarray(got[f"out{i}"]).reshape(e.shape), e.numpy(), atol=1e-6)


@pytest.mark.parametrize("shape,size,dim,sizes", [
    ((1, 512), 128, 1, [128, 128, 128, 128]),   # a scripted LSTMCell's gates under make_fx
    ((2, 10), 4, -1, [4, 4, 2]),                 # uneven: last piece smaller, negative axis
])
def test_unsafe_split_lowers_to_split(shape, size, dim, sizes):
    import coremltools as ct
    from torch.fx.experimental.proxy_tensor import make_fx

    def pieces(x):
        return tuple(p * (i + 1) for i, p in enumerate(torch.ops.aten.unsafe_split.Tensor(x, size, dim)))

    graph = make_fx(pieces)(torch.zeros(shape))

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fx = graph

        def forward(self, x):
            return tuple(self.fx(x))

    torch_ops.register()
    traced = torch.jit.trace(Wrapped(), torch.zeros(shape))
    assert any(n.kind() == "aten::unsafe_split" for n in traced.inlined_graph.nodes())
    mlmodel = ct.convert(traced, inputs=[ct.TensorType(name="x", shape=shape, dtype=np.float32)],
                         convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
                         compute_precision=ct.precision.FLOAT32, skip_model_load=True)
    split = [op for op in mlmodel._mil_program.functions["main"].operations if op.op_type == "split"]
    assert len(split) == 1 and list(split[0].split_sizes.val) == sizes
