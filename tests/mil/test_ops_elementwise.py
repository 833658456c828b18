"""Conformance of elementwise, activation and reduction ops: single-op MIL programs built with
coremltools' builder, converted, run by kiln, compared with numpy versions of the MIL definitions."""

import math

import numpy as np
import pytest
from coremltools.converters.mil import Builder as mb
from milprog import run_program

RNG = np.random.default_rng(7)
X = RNG.standard_normal((2, 3, 4)).astype(np.float32)
POS = (np.abs(X) + 0.1).astype(np.float32)
UNIT = np.tanh(X).astype(np.float32) * 0.9
_erf = np.vectorize(math.erf)


def sig(v):
    return 1 / (1 + np.exp(-v))


UNARY = {
    "abs": (X, np.abs),
    "acos": (UNIT, np.arccos),
    "asin": (UNIT, np.arcsin),
    "atan": (X, np.arctan),
    "atanh": (UNIT, np.arctanh),
    "ceil": (X * 3, np.ceil),
    "cos": (X, np.cos),
    "cosh": (X, np.cosh),
    "erf": (X, _erf),
    "exp": (X, np.exp),
    "exp2": (X, np.exp2),
    "floor": (X * 3, np.floor),
    "round": (np.array([0.5, 1.5, -0.5, -2.5, 2.4, -1.6], np.float32), np.round),
    "sign": (X, np.sign),
    "sin": (X, np.sin),
    "sinh": (X, np.sinh),
    "sqrt": (POS, np.sqrt),
    "square": (X, np.square),
    "tan": (UNIT, np.tan),
    "tanh": (X, np.tanh),
    "relu": (X, lambda v: np.maximum(v, 0)),
    "relu6": (X * 5, lambda v: np.clip(v, 0, 6)),
    "sigmoid": (X, sig),
    "silu": (X, lambda v: v * sig(v)),
    "softplus": (X, lambda v: np.log1p(np.exp(v))),
    "softsign": (X, lambda v: v / (1 + np.abs(v))),
}


@pytest.mark.parametrize("opset", ["iOS15", "iOS17"])
def test_unary_ops(mil_dir, opset):
    names = sorted(UNARY)
    inputs = {f"x_{n}": UNARY[n][0] for n in names}
    outs = run_program(lambda **kw: [getattr(mb, n)(x=kw[f"x_{n}"]) for n in names], inputs, mil_dir, opset)
    for name, got in zip(names, outs):
        x, ref = UNARY[name]
        np.testing.assert_allclose(got, ref(x.astype(np.float64)), rtol=1e-5, atol=1e-5, err_msg=name)


def test_unary_ops_with_epsilon_and_params(mil_dir):
    def build(x, p):
        return [
            mb.inverse(x=p, epsilon=0.5),
            mb.log(x=p),
            mb.log(x=p, epsilon=2.0),
            mb.rsqrt(x=p, epsilon=0.25),
            mb.clip(x=x, alpha=-0.5, beta=0.7),
            mb.threshold(x=x, alpha=0.2),
            mb.logical_not(x=mb.greater(x=x, y=0.0)),
            mb.elu(x=x, alpha=0.7),
            mb.leaky_relu(x=x, alpha=0.1),
            mb.thresholded_relu(x=x, alpha=0.3),
            mb.clamped_relu(x=x, alpha=0.2, beta=0.5),
            mb.linear_activation(x=x, alpha=2.0, beta=-1.0),
            mb.scaled_tanh(x=x, alpha=1.5, beta=0.5),
            mb.sigmoid_hard(x=x, alpha=0.2, beta=0.5),
            mb.prelu(x=mb.expand_dims(x=x, axes=[-1]), alpha=np.array([0.1, 0.2, 0.3], np.float32)),
            mb.softplus_parametric(x=mb.expand_dims(x=x, axes=[-1]), alpha=np.array([1.0, 2.0, 0.5], np.float32),
                                   beta=np.array([0.5, 1.0, 2.0], np.float32)),
            mb.gelu(x=x),
            mb.gelu(x=x, mode="TANH_APPROXIMATION"),
            mb.gelu(x=x, mode="SIGMOID_APPROXIMATION"),
            mb.softmax(x=x, axis=1),
            mb.softmax(x=x),
        ]

    outs = run_program(build, {"x": X, "p": POS}, mil_dir, "iOS17")
    ch = np.array([0.1, 0.2, 0.3], np.float32).reshape(1, 3, 1)
    a2 = np.array([1.0, 2.0, 0.5]).reshape(1, 3, 1, 1)
    b2 = np.array([0.5, 1.0, 2.0]).reshape(1, 3, 1, 1)
    x4 = X[..., None]

    def softmax(v, axis):
        e = np.exp(v - v.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)

    expected = [
        1 / (POS + 0.5),
        np.log(POS + 1e-45),
        np.log(POS + 2.0),
        1 / np.sqrt(POS + 0.25),
        np.clip(X, -0.5, 0.7),
        np.maximum(X, 0.2),
        ~(X > 0),
        np.where(X > 0, X, 0.7 * (np.exp(X) - 1)),
        np.where(X >= 0, X, 0.1 * X),
        np.where(X >= 0.3, X, 0),
        np.minimum(0.5, np.where(X >= 0, X, 0.2 * X)),
        2 * X - 1,
        1.5 * np.tanh(0.5 * X),
        np.clip(0.2 * X + 0.5, 0, 1),
        np.where(x4 > 0, x4, ch[..., None] * x4),
        a2 * np.log1p(np.exp(b2 * x4)),
        0.5 * X * (1 + _erf(X / np.sqrt(2))),
        0.5 * X * (1 + np.tanh(np.sqrt(2 / np.pi) * (X + 0.044715 * X**3))),
        X * sig(1.702 * X),
        softmax(X, 1),
        softmax(X, -1),
    ]
    assert len(outs) == len(expected)
    for i, (got, want) in enumerate(zip(outs, expected)):
        if want.dtype == bool:
            np.testing.assert_array_equal(got, want, err_msg=str(i))
        else:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=str(i))


BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "real_div": np.true_divide,
    "floor_div": lambda a, b: np.floor(a / b),
    "mod": np.mod,
    "pow": np.power,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "equal": np.equal,
    "not_equal": np.not_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "less": np.less,
    "less_equal": np.less_equal,
}


def test_binary_ops_broadcast_float(mil_dir):
    a = RNG.standard_normal((2, 1, 4)).astype(np.float32)
    b = (RNG.standard_normal((3, 1)) + 2.5).astype(np.float32)  # broadcasts to (2, 3, 4)
    b[0, 0] = a[0, 0, 0]  # an exact tie for the comparisons
    pa = np.abs(a) + 0.5
    names = sorted(BINARY)

    def build(a, b, pa):
        return [getattr(mb, n)(x=pa if n == "pow" else a, y=b) for n in names]

    outs = run_program(build, {"a": a, "b": b, "pa": pa}, mil_dir)
    for name, got in zip(names, outs):
        want = BINARY[name](pa if name == "pow" else a, b)
        assert got.shape == (2, 3, 4), name
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_binary_ops_int32_and_logical(mil_dir):
    a = np.array([[7, -7, 5, 0], [9, -9, 1, 3]], np.int32)
    b = np.array([2, 2, -3, 5], np.int32)
    p = np.array([True, False, True, False])
    q = np.array([True, True, False, False])

    def build(a, b, pf, qf):  # Core ML I/O has no bool: cast inside, outputs come back as fp32
        p, q = mb.cast(x=pf, dtype="bool"), mb.cast(x=qf, dtype="bool")
        return [mb.add(x=a, y=b), mb.mul(x=a, y=b), mb.floor_div(x=a, y=b), mb.mod(x=a, y=b),
                mb.real_div(x=a, y=b), mb.maximum(x=a, y=b), mb.less(x=a, y=b),
                mb.logical_and(x=p, y=q), mb.logical_or(x=p, y=q), mb.logical_xor(x=p, y=q),
                mb.abs(x=a), mb.square(x=a), mb.sign(x=a)]

    outs = run_program(build, {"a": a, "b": b, "pf": p.astype(np.float32), "qf": q.astype(np.float32)}, mil_dir)
    expected = [a + b, a * b, a // b, np.mod(a, b), np.trunc(a / b).astype(np.int32), np.maximum(a, b),
                a < b, p & q, p | q, p ^ q, np.abs(a), a * a, np.sign(a)]
    for i, (got, want) in enumerate(zip(outs, expected)):
        if want.dtype != bool:
            assert got.dtype == want.dtype, (i, got.dtype, want.dtype)
        np.testing.assert_array_equal(got, want.astype(got.dtype), err_msg=str(i))


def test_cast_and_clip_variants(mil_dir):
    x = np.array([-2.7, -0.5, 0.0, 0.5, 3.9, 200.0], np.float32)

    def build(x):
        return [mb.cast(x=x, dtype="int32"), mb.cast(x=x, dtype="bool"), mb.cast(x=x, dtype="fp16"),
                mb.cast(x=mb.cast(x=x, dtype="int32"), dtype="fp32"), mb.cast(x=x, dtype="int8"),
                mb.cast(x=x, dtype="uint8")]

    outs = run_program(build, {"x": x}, mil_dir, "iOS17")
    np.testing.assert_array_equal(outs[0], np.array([-2, 0, 0, 0, 3, 200], np.int32))
    np.testing.assert_array_equal(outs[1], x != 0)
    assert outs[2].dtype == np.float16
    np.testing.assert_array_equal(outs[2], x.astype(np.float16))
    np.testing.assert_array_equal(outs[3], np.trunc(x))
    # Core ML I/O widens int8/uint8 outputs to int32; the values are the 8-bit ones (200 wraps)
    np.testing.assert_array_equal(outs[4], np.array([-2, 0, 0, 0, 3, -56]))
    np.testing.assert_array_equal(outs[5], np.array([254, 0, 0, 0, 3, 200]))


REDUCE = {
    "reduce_sum": lambda v, a, k: np.sum(v, axis=a, keepdims=k),
    "reduce_mean": lambda v, a, k: np.mean(v, axis=a, keepdims=k),
    "reduce_max": lambda v, a, k: np.max(v, axis=a, keepdims=k),
    "reduce_min": lambda v, a, k: np.min(v, axis=a, keepdims=k),
    "reduce_prod": lambda v, a, k: np.prod(v, axis=a, keepdims=k),
    "reduce_l1_norm": lambda v, a, k: np.sum(np.abs(v), axis=a, keepdims=k),
    "reduce_l2_norm": lambda v, a, k: np.sqrt(np.sum(v * v, axis=a, keepdims=k)),
    "reduce_sum_square": lambda v, a, k: np.sum(v * v, axis=a, keepdims=k),
    "reduce_log_sum": lambda v, a, k: np.log(np.sum(np.abs(v) + 1, axis=a, keepdims=k)),
    "reduce_log_sum_exp": lambda v, a, k: np.log(np.sum(np.exp(v), axis=a, keepdims=k)),
}


@pytest.mark.parametrize("axes,keep", [([1], False), ([-1, 0], True), (None, False)])
def test_reductions(mil_dir, axes, keep):
    names = sorted(REDUCE)
    pos = np.abs(X) + 1

    def build(x, pos):
        return [getattr(mb, n)(x=pos if n == "reduce_log_sum" else x, axes=axes, keep_dims=keep) for n in names]

    outs = run_program(build, {"x": X, "pos": pos}, mil_dir)
    ax = None if axes is None else tuple(axes)
    for name, got in zip(names, outs):
        src = X
        want = REDUCE[name](src.astype(np.float64), ax, keep)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)


def test_arg_reductions(mil_dir):
    x = np.array([[1, 5, 5, 0], [7, 2, 7, 7]], np.float32)

    def build(x):
        return [mb.reduce_argmax(x=x, axis=-1), mb.reduce_argmin(x=x, axis=0, keep_dims=True),
                mb.reduce_argmax(x=x, axis=1, output_dtype="uint16")]

    outs = run_program(build, {"x": x}, mil_dir, "iOS17")
    np.testing.assert_array_equal(outs[0], [1, 0])
    np.testing.assert_array_equal(outs[1], [[0, 1, 0, 0]])
    np.testing.assert_array_equal(outs[2], [1, 0])  # uint16 inside, widened at the I/O
