"""Helpers shared by op implementations: parameter coercion, axes, activations, torch access."""

from __future__ import annotations

import functools
import threading

import numpy as np

from ..dtypes import torch_can_share


def as_int(value, name: str = "value") -> int:
    """A Python int from a 0-d/1-element array or a Python number."""
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(f"{name} must be a scalar, got shape {list(array.shape)}")
    if array.dtype.kind not in "iub":
        raise ValueError(f"{name} must be an integer, got {array.dtype}")
    return int(array.reshape(()))


def as_float(value, name: str = "value") -> float:
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(f"{name} must be a scalar, got shape {list(array.shape)}")
    return float(array.reshape(()))


def as_bool(value, name: str = "value") -> bool:
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(f"{name} must be a scalar, got shape {list(array.shape)}")
    return bool(array.reshape(()))


def as_str(value, name: str = "value") -> str:
    if isinstance(value, str):
        return value
    array = np.asarray(value)
    if array.size == 1 and array.dtype.kind == "U":
        return str(array.reshape(()))
    raise ValueError(f"{name} must be a string, got {value!r}")


def as_ints(value, name: str = "value") -> list[int]:
    """A list of Python ints from a 1-D int array (or a list)."""
    if value is None:
        return []
    array = np.asarray(value)
    if array.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integers, got {array.dtype}")
    return array.reshape(-1).tolist() if array.dtype.kind != "b" else [int(v) for v in array.reshape(-1)]


def as_bools(value, n: int, name: str = "value") -> list[bool]:
    if value is None:
        return [False] * n
    flags = [bool(v) for v in np.asarray(value).reshape(-1)]
    if len(flags) != n:
        raise ValueError(f"{name} has {len(flags)} entries, expected {n}")
    return flags


def norm_axis(axis: int, rank: int, name: str = "axis") -> int:
    """``axis`` in ``[-rank, rank)`` normalised to ``[0, rank)``."""
    if not -rank <= axis < rank:
        raise ValueError(f"{name} {axis} out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def norm_axes(axes, rank: int, name: str = "axes") -> tuple[int, ...]:
    result = tuple(norm_axis(a, rank, name) for a in as_ints(axes, name))
    if len(set(result)) != len(result):
        raise ValueError(f"{name} {list(result)} repeats an axis")
    return result


def float_array(x) -> np.ndarray:
    x = np.asarray(x)
    return x if x.dtype.kind == "f" else x.astype(np.float32)


def same_dtype(result, like: np.ndarray):
    """Cast ``result`` to ``like``'s dtype (ops computing in a wider type)."""
    result = np.asarray(result)
    return result if result.dtype == like.dtype else result.astype(like.dtype)


# Element-wise transcendental ops on float32 arrays of at least this many elements run on torch
# (vectorised exp, intra-op threads): numpy's ``1 / (1 + e^-x)`` makes three passes and two
# temporaries. Both are within a few ulp of the exact value (tests/mil/test_dtypes.py).
TORCH_ELEMENTWISE_MIN = 1 << 14


def torch_elementwise(x) -> bool:
    """Whether ``x`` is a float32 array big enough for torch's element-wise kernels, which it can
    share without a copy (C-contiguous, writeable)."""
    return torch_can_share(x, TORCH_ELEMENTWISE_MIN)


def sigmoid(x):
    if torch_elementwise(x):
        t = torch()
        return t.sigmoid(t.from_numpy(x)).numpy()
    return 1.0 / (1.0 + np.exp(-x))


def sigmoid_in_place(x):
    """:func:`sigmoid`, overwriting ``x`` (a float32 array the caller owns)."""
    if torch_elementwise(x):
        torch().from_numpy(x).sigmoid_()
        return x
    np.negative(x, out=x)
    np.exp(x, out=x)
    np.add(x, 1.0, out=x)
    return np.divide(1.0, x, out=x)


def activation(name: str):
    """The recurrent-op activations by MIL name (their default parameters)."""
    name = name.lower()
    table = {
        "sigmoid": sigmoid,
        "tanh": np.tanh,
        "scaled_tanh": np.tanh,  # alpha = beta = 1
        "hard_sigmoid": lambda x: np.minimum(np.maximum(0.2 * x + 0.5, 0.0), 1.0),
        "sigmoid_hard": lambda x: np.minimum(np.maximum(0.2 * x + 0.5, 0.0), 1.0),
        "relu": lambda x: np.maximum(x, 0.0),
        "linear": lambda x: x,
    }
    if name not in table:
        raise ValueError(f"unknown activation {name!r} (known: {sorted(table)})")
    return table[name]


@functools.lru_cache(maxsize=1)
def torch():
    """The torch module, imported on first use (heavy kernels only)."""
    import torch as _torch

    return _torch


def to_torch(x: np.ndarray):
    """``x`` as a torch tensor sharing its memory where torch can (a writeable array with
    non-negative strides, e.g. a transposed view: torch's kernels read strided inputs, so no copy
    is made first); else a contiguous copy (read-only arrays, reversed views)."""
    t = torch()
    x = np.asarray(x)
    if x.flags.writeable and (x.flags.c_contiguous or all(
            stride >= 0 and stride % x.itemsize == 0 for stride in x.strides)):
        return t.from_numpy(x)
    x = np.ascontiguousarray(x)
    if not x.flags.writeable:
        x = x.copy()
    return t.from_numpy(x)


def spatial_padding(pad_type: str, pad, in_sizes, kernel, strides, dilations) -> list[tuple[int, int]]:
    """(before, after) padding per spatial dim for conv/pool ``pad_type`` semantics."""
    n = len(in_sizes)
    pad_type = pad_type.lower()
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        values = as_ints(pad, "pad") if pad is not None else [0] * (2 * n)
        if len(values) != 2 * n:
            raise ValueError(f"pad has {len(values)} entries, expected {2 * n}")
        if any(v < 0 for v in values):
            raise ValueError(f"negative padding {values}")
        return [(values[2 * i], values[2 * i + 1]) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        result = []
        for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            small, big = total // 2, total - total // 2
            result.append((small, big) if pad_type == "same" else (big, small))
        return result
    raise ValueError(f"unknown pad_type {pad_type!r}")


def erf(x: np.ndarray) -> np.ndarray:
    """Elementwise Gauss error function (torch kernel; numpy has none)."""
    x = np.asarray(x)
    if x.size == 0:
        return x.astype(np.float32)
    work = x.astype(np.float64) if x.dtype != np.float64 else x
    return torch().erf(to_torch(work)).numpy().astype(x.dtype if x.dtype.kind == "f" else np.float32)


# -- constant float operands of prepared products (conv, linear, matmul) --------------------------

# fp16 weights up to this many elements are widened to float32 once, when the plan is built;
# larger ones stay float16 (shared by every plan of the model) and are widened per call.
WIDEN_ONCE_MAX = 1 << 18

# Products of at least this many multiply-adds run on torch (MKL, its intra-op threads); smaller
# ones on numpy, whose per-call overhead is lower.
TORCH_PRODUCT_MIN = 1 << 20


class WideningScratch:
    """The float32 buffer (one per thread) into which a plan's kernels widen their large fp16
    weights, call after call. A fresh tensor per call pays its page faults every time: widening a
    4096x1024 weight took 8.6 ms into a new tensor, 1.7 ms into a reused one. A widened weight is
    valid until the next widening, so a kernel widens one weight and uses it before returning."""

    def __init__(self):
        self._local = threading.local()

    def widen(self, narrow):
        """``narrow`` (a float16 torch tensor) as float32, in the buffer."""
        t = torch()
        size = narrow.numel()
        buffer = getattr(self._local, "buffer", None)
        if buffer is None or buffer.numel() < size:
            buffer = self._local.buffer = t.empty(size, dtype=t.float32)
        return buffer[:size].view(narrow.shape).copy_(narrow)


def float32_source(weight, scratch: WideningScratch | None = None):
    """A function returning ``weight`` as a float32 array: the array itself, a copy widened once,
    or (a large float16 weight) a widening per call, into ``scratch`` when given."""
    weight = np.asarray(weight)
    if weight.dtype == np.float32:
        return lambda: weight
    if weight.dtype == np.float16 and weight.size > WIDEN_ONCE_MAX:
        wide = torch_float32_source(weight, scratch)  # torch widens with F16C, numpy in software
        return lambda: wide().numpy()
    wide = weight.astype(np.float32)
    return lambda: wide


def torch_float32_source(weight, scratch: WideningScratch | None = None):
    """As :func:`float32_source`, returning a torch tensor (widened by torch per call when large)."""
    weight = np.asarray(weight)
    if weight.dtype == np.float16 and weight.size > WIDEN_ONCE_MAX:
        narrow = to_torch(weight)
        if scratch is not None:
            return lambda: scratch.widen(narrow)
        return lambda: narrow.float()
    wide = to_torch(weight.astype(np.float32, copy=False))
    return lambda: wide


def product_size(a_shape, b_shape) -> int:
    """Multiply-adds of ``matmul(a, b)`` for shapes of rank >= 2 (batch dims broadcast)."""
    batch = np.broadcast_shapes(tuple(a_shape[:-2]), tuple(b_shape[:-2]))
    return int(np.prod(batch, dtype=np.int64)) * a_shape[-2] * a_shape[-1] * b_shape[-1]
