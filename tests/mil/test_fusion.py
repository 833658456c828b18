"""Prepared kernels, fusion and the constant pool: a fused plan gives bit-identical results to the
unfused one (in fp16 emulation above all), fp16 weights stay fp16 in memory and are shared by
every plan of a model, output checks run on the first call only when every shape is static."""

from __future__ import annotations

import numpy as np
import pytest
from milprog import save_program

from kiln.mil import load_model
from kiln.mil.errors import OpExecutionError

RNG = np.random.default_rng(3)
W_CONV = (RNG.standard_normal((6, 4, 3)) * 0.5).astype(np.float16)
B_CONV = (RNG.standard_normal((1, 6, 1)) * 0.1).astype(np.float16)
W_IH = (RNG.standard_normal((32, 6)) * 0.5).astype(np.float16)
W_HH = (RNG.standard_normal((32, 8)) * 0.5).astype(np.float16)
B_IH = (RNG.standard_normal(32) * 0.1).astype(np.float16)
B_HH = (RNG.standard_normal(32) * 0.1).astype(np.float16)
W_BIG = (RNG.standard_normal((96, 64)) * 0.1).astype(np.float16)  # 6144 elements: pooled as fp16


def _conv_lstm(x, h, c):
    """conv + bias + relu, then an LSTM cell decomposed as converters emit it, all in fp16."""
    from coremltools.converters.mil import Builder as mb

    y = mb.relu(x=mb.add(x=mb.conv(x=x, weight=W_CONV, pad_type="same"), y=B_CONV))
    feat = mb.reduce_mean(x=y, axes=[2])
    gates = mb.add(x=mb.linear(x=feat, weight=W_IH, bias=B_IH), y=mb.linear(x=h, weight=W_HH, bias=B_HH))
    i, f, g, o = mb.split(x=gates, num_splits=4, axis=1)
    c2 = mb.add(x=mb.mul(x=mb.sigmoid(x=f), y=c), y=mb.mul(x=mb.sigmoid(x=i), y=mb.tanh(x=g)))
    h2 = mb.mul(x=mb.sigmoid(x=o), y=mb.tanh(x=c2))
    big = mb.linear(x=mb.concat(values=(h2, h2, h2, h2, h2, h2, h2, h2), axis=1), weight=W_BIG)
    return y, h2, c2, big


@pytest.fixture(scope="module")
def conv_lstm(tmp_path_factory):
    specs = [("x", (1, 4, 16), np.float16), ("h", (1, 8), np.float16), ("c", (1, 8), np.float16)]
    return save_program(_conv_lstm, specs, tmp_path_factory.mktemp("fusion"))


def _inputs(seed):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((1, 4, 16)).astype(np.float16),
            "h": (rng.standard_normal((1, 8)) * 0.5).astype(np.float16),
            "c": (rng.standard_normal((1, 8)) * 0.5).astype(np.float16)}


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_fused_plan_is_bit_identical_to_the_unfused_plan(conv_lstm, precision):
    model = load_model(conv_lstm)
    fused, plain = model.plan(precision), model.plan(precision, fuse=False)
    assert plain.step_count == plain.op_count - sum(1 for op in model.block().operations if op.type == "const")
    assert fused.step_count <= 6 < plain.step_count  # conv+add+relu and the cell collapse
    labels = [step.label[0] for step in fused._steps]
    assert any(label.startswith("conv+add+relu") for label in labels), labels
    for seed in range(8):
        inputs = _inputs(seed)
        a, b = fused.run(inputs), plain.run(inputs)
        assert list(a) == list(b)
        for name in a:
            assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name], equal_nan=True), name
        if precision == "fp16":  # every fp16 value is an fp16 number: the emulation really rounded
            for name in a:
                assert np.array_equal(a[name].astype(np.float16).astype(a[name].dtype), a[name])


def test_fp16_weights_stay_fp16_and_are_shared_by_every_plan(conv_lstm):
    model = load_model(conv_lstm)
    fp32, fp16 = model.plan("fp32"), model.plan("fp16")
    big = [v for values in model.constants._values.values() for v in values
           if isinstance(v, np.ndarray) and v.shape == W_BIG.shape]
    assert len(big) == 1 and big[0].dtype == np.float16 and np.array_equal(big[0], W_BIG)
    for plan in (fp32, fp16):  # the plans hold the pool's array itself, not a widened copy
        assert any(value is big[0] for value in plan._template)
    inputs = _inputs(0)
    h2 = fp32.run(inputs)[fp32.outputs[1].name].astype(np.float32)
    expected = np.concatenate([h2] * 8, axis=1) @ W_BIG.astype(np.float32).T
    got = fp32.run(inputs)[fp32.outputs[3].name]
    assert got.dtype == np.float16  # an fp16 output
    np.testing.assert_allclose(got, expected.astype(np.float16), rtol=2e-3, atol=1e-4)


def test_ops_are_prepared_and_checked_once_when_shapes_are_static(tmp_path):
    from coremltools.converters.mil import Builder as mb

    def build(x):
        return mb.reshape(x=mb.mul(x=x, y=2.0), shape=[-1])

    static = load_model(save_program(build, [("x", (2, 3), np.float32)], tmp_path)).plan("fp32")
    assert static.check_once and static.prepared_count == 2
    np.testing.assert_array_equal(static.run({"x": np.ones((2, 3), np.float32)})["reshape_0"], np.full(6, 2.0))


def test_a_failing_fused_producer_names_its_own_node(tmp_path):
    from coremltools.converters.mil import Builder as mb

    def build(x, y):
        return mb.relu(x=mb.matmul(x=x, y=y))

    model = load_model(save_program(build, [("x", (2, 3), np.float32), ("y", (3, 4), np.float32)], tmp_path))
    plan = model.plan("fp32")
    assert [step.label[0] for step in plan._steps] == ["matmul+relu"]
    with pytest.raises(OpExecutionError, match="op 'matmul' .*producing 'matmul_0'"):
        plan._steps[0]([np.zeros((2, 5), np.float32), np.zeros((3, 4), np.float32), None, None])


def test_long_single_use_chains_are_split_into_bounded_steps(tmp_path):
    from coremltools.converters.mil import Builder as mb

    from kiln.mil.fusion import MAX_FUSED_DEPTH

    def build(x):
        for _ in range(3 * MAX_FUSED_DEPTH):
            x = mb.add(x=x, y=1.0)
        return x

    plan = load_model(save_program(build, [("x", (4,), np.float32)], tmp_path)).plan("fp32")
    assert plan.step_count == 3
    np.testing.assert_array_equal(plan.run({"x": np.zeros(4, np.float32)})[plan.outputs[0].name],
                                  np.full(4, 3.0 * MAX_FUSED_DEPTH, np.float32))


def test_every_process_prepares_the_same_kernels(tmp_path):
    """The dynamic inputs' order (the prepared kernel's argument order) comes from the op's
    signature, not from the protobuf map, whose order changes with the process's hash seed: a
    matmul of two computed operands missed its prepared kernel in about half the processes."""
    import os
    import subprocess
    import sys

    from coremltools.converters.mil import Builder as mb

    def build(a, b):
        return mb.matmul(x=mb.mul(x=a, y=2.0), y=mb.mul(x=b, y=3.0), transpose_y=True)

    package = save_program(build, [("a", (2, 4, 8), np.float32), ("b", (2, 5, 8), np.float32)], tmp_path)
    script = ("import sys; from kiln.mil import load_model; "
              "print(load_model(sys.argv[1]).plan('fp32', fuse=False).prepared_count)")
    runs = [subprocess.Popen([sys.executable, "-c", script, str(package)], text=True,
                             env={**os.environ, "PYTHONHASHSEED": str(seed)},
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            for seed in range(4)]  # seeds 0-3 give both map orders with the pinned protobuf
    counts = [int(run.communicate()[0].split()[-1]) for run in runs]
    assert counts == [3] * 4  # both muls and the matmul, in every process


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_tile_of_size_one_axes_runs_as_a_broadcast_view(tmp_path, precision):
    """NeMo's subsampling tiles a [1, 1, T, F] mask to [1, C, T, F] before a mul: the prepared tile
    returns a broadcasting view (no copy), the mul broadcasts it, the results are the tiled ones;
    a tile that repeats a longer axis keeps the copying kernel."""
    from coremltools.converters.mil import Builder as mb

    def build(x, mask):
        broadcast = mb.tile(x=mask, reps=[1, 4, 1, 1])
        repeated = mb.tile(x=mask, reps=[1, 1, 2, 1])
        return mb.mul(x=mb.relu(x=x), y=broadcast), repeated, broadcast

    rng = np.random.default_rng(5)
    inputs = {"x": rng.standard_normal((1, 4, 6, 3)).astype(np.float32),
              "mask": (rng.random((1, 1, 6, 3)) > 0.5).astype(np.float32)}
    model = load_model(save_program(build, [("x", (1, 4, 6, 3), np.float32), ("mask", (1, 1, 6, 3), np.float32)],
                                    tmp_path))
    fused, plain = model.plan(precision), model.plan(precision, fuse=False)
    masked, repeated, broadcast = (np.tile(inputs["mask"], (1, 4, 1, 1)), np.tile(inputs["mask"], (1, 1, 2, 1)),
                                   np.tile(inputs["mask"], (1, 4, 1, 1)))
    expected = [np.maximum(inputs["x"], 0) * masked, repeated, broadcast]
    for plan in (fused, plain):
        outputs = plan.run(inputs)
        for spec, want in zip(plan.outputs, expected):
            got = outputs[spec.name]
            assert got.flags.writeable and got.flags.c_contiguous  # outputs are the caller's arrays
            np.testing.assert_array_equal(got, want.astype(got.dtype))


def _prepared(op_type, consts, input_types, output_types=()):
    from kiln.mil.registry import OpSpec, lookup

    impl = lookup(op_type, "iOS17")
    spec = OpSpec(op_type=op_type, opset="iOS17", precision="fp32", consts=consts,
                  dynamic=tuple(input_types), input_types=input_types, output_types=list(output_types))
    return impl.prepare(spec)


def test_the_prepared_tile_is_a_view_only_for_size_one_axes():
    from kiln.coreml.dtypes import BY_NAME
    from kiln.mil.values import TensorType

    mask = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    fp32 = BY_NAME["fp32"]
    view = _prepared("tile", {"reps": np.array([2, 4, 1, 1])}, {"x": TensorType(fp32, (1, 1, 2, 3))})
    got = view(mask)
    assert np.shares_memory(got, mask) and not got.flags.writeable
    np.testing.assert_array_equal(got, np.tile(mask, (2, 4, 1, 1)))
    copying = _prepared("tile", {"reps": np.array([1, 1, 2, 1])}, {"x": TensorType(fp32, (1, 1, 2, 3))})
    assert copying is None  # repeats a size-2 axis: the plain np.tile


def test_fill_like_of_a_static_shape_is_computed_once(tmp_path):
    from coremltools.converters.mil import Builder as mb

    def build(x):
        filled = mb.fill_like(ref_tensor=x, value=-1e4)
        return mb.select(cond=mb.greater(x=x, y=0.0), a=x, b=filled), mb.add(x=filled, y=1.0)

    model = load_model(save_program(build, [("x", (3, 5), np.float32)], tmp_path))
    plan = model.plan("fp32")
    x = np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32)
    for _ in range(2):  # a consumer never writes into the shared constant: the second run agrees
        selected, shifted = (plan.run({"x": x})[spec.name] for spec in plan.outputs)
        np.testing.assert_array_equal(selected, np.where(x > 0, x, np.float32(-1e4)))
        np.testing.assert_array_equal(shifted, np.full((3, 5), -1e4 + 1, np.float32))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_pointwise_conv_multiplies_without_gathering(tmp_path, precision):
    """A 1x1 conv (stride 1, no padding): x is its own im2col matrix, reshaped, not gathered;
    same values as torch's conv2d (fp32) and as the unfused plan."""
    import torch
    from coremltools.converters.mil import Builder as mb

    rng = np.random.default_rng(7)
    weight = (rng.standard_normal((8, 6, 1, 1)) * 0.3).astype(np.float32)
    bias = rng.standard_normal(8).astype(np.float32)

    def build(x):
        return mb.conv(x=mb.relu(x=x), weight=weight, bias=bias, pad_type="valid")

    x = rng.standard_normal((2, 6, 5, 7)).astype(np.float32)
    model = load_model(save_program(build, [("x", x.shape, np.float32)], tmp_path))
    fused, plain = model.plan(precision), model.plan(precision, fuse=False)
    a, b = fused.run({"x": x}), plain.run({"x": x})
    name = fused.outputs[0].name
    np.testing.assert_array_equal(a[name], b[name])
    expected = torch.nn.functional.conv2d(torch.from_numpy(np.maximum(x, 0)), torch.from_numpy(weight),
                                          torch.from_numpy(bias)).numpy()
    np.testing.assert_allclose(a[name], expected, rtol=1e-5 if precision == "fp32" else 2e-3, atol=1e-5)


def test_to_torch_shares_strided_views_and_copies_what_torch_cannot_share():
    from kiln.mil.ops._util import to_torch

    base = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    transposed = base.transpose(0, 2, 1)
    shared = to_torch(transposed)
    assert shared.data_ptr() == base.ctypes.data and np.array_equal(shared.numpy(), transposed)
    reversed_ = base[:, ::-1]  # a negative stride: torch cannot wrap it
    readonly = np.broadcast_to(base[:1], base.shape)
    for view in (reversed_, readonly):
        copied = to_torch(view)
        assert copied.is_contiguous() and np.array_equal(copied.numpy(), view)
        assert not np.shares_memory(copied.numpy(), base)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_large_softmax_and_a_transposed_linear_run_on_torch_and_match_float64(tmp_path, precision):
    """Attention-sized softmax (>= 16K elements, torch's kernel) over the last and a middle axis,
    and a large linear reading a transposed view without a copy: fused equals unfused, and both
    match a float64 reference to fp32 (fp16: rounding) accuracy."""
    from coremltools.converters.mil import Builder as mb

    rng = np.random.default_rng(11)
    weight = (rng.standard_normal((96, 64)) * 0.1).astype(np.float32)

    def build(x):
        last = mb.softmax(x=x, axis=-1)
        middle = mb.softmax(x=x, axis=1)
        projected = mb.linear(x=mb.transpose(x=x, perm=[0, 2, 1]), weight=weight)  # [8, 128, 96]
        return last, middle, projected

    x = (rng.standard_normal((8, 64, 128)) * 3).astype(np.float32)
    model = load_model(save_program(build, [("x", x.shape, np.float32)], tmp_path))
    fused, plain = model.plan(precision), model.plan(precision, fuse=False)
    a, b = fused.run({"x": x}), plain.run({"x": x})
    wide = x.astype(np.float64)

    def softmax(v, axis):
        e = np.exp(v - v.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)

    expected = [softmax(wide, -1), softmax(wide, 1), wide.transpose(0, 2, 1) @ weight.T.astype(np.float64)]
    tolerance = {"fp32": dict(rtol=1e-5, atol=1e-5), "fp16": dict(rtol=4e-3, atol=2e-2)}[precision]
    for spec, want in zip(fused.outputs, expected):
        assert np.array_equal(a[spec.name], b[spec.name])
        np.testing.assert_allclose(a[spec.name], want, **tolerance)


def _large_conv(x):
    from coremltools.converters.mil import Builder as mb

    y = mb.add(x=mb.conv(x=x, weight=W_CONV, pad_type="same"), y=B_CONV)
    return mb.mul(x=mb.sigmoid(x=y), y=y)


def test_large_fp16_values_round_alike_on_the_first_run_and_later_ones(tmp_path):
    """The first run of a plan rounds owned fp16 results in place (torch path, chunked), later runs
    too: every run of every plan gives the same bits, all fp16 numbers."""
    model = load_model(save_program(_large_conv, [("x", (1, 4, 9000), np.float16)], tmp_path))
    inputs = {"x": (np.random.default_rng(5).standard_normal((1, 4, 9000)) * 300).astype(np.float16)}
    runs = []
    for fuse in (True, False):
        plan = model.plan("fp16", fuse=fuse)
        runs += [plan.run(inputs), plan.run(inputs)]
    first = runs[0]
    for name in first:
        assert first[name].size >= 6 * 9000
        assert np.array_equal(first[name].astype(np.float16).astype(np.float32), first[name])
        for other in runs[1:]:
            assert np.array_equal(other[name].view(np.uint32), first[name].view(np.uint32)), name
