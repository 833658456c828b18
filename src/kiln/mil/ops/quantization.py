"""Activation quantization ops (coremltools defs iOS17/quantization_ops.py)."""

from __future__ import annotations

import numpy as np

from ..registry import register
from ._util import as_int, as_str, norm_axis


def _param(p, data, axis, name):
    p = np.asarray(p, np.float32)
    if p.ndim == 0 or p.size == 1:
        return p.reshape(())
    if axis is None:
        raise ValueError(f"vector {name} needs an axis")
    axis = norm_axis(as_int(axis, "axis"), data.ndim)
    if p.ndim != 1 or p.shape[0] != data.shape[axis]:
        raise ValueError(f"{name} of shape {list(p.shape)} does not match dimension {axis}")
    shape = [1] * data.ndim
    shape[axis] = -1
    return p.reshape(shape)


@register("quantize", since="iOS17")
def quantize(input, scale, output_dtype, zero_point=None, axis=None):
    """MIL ``quantize`` (iOS17+): ``clip(round(input / scale) + zero_point)`` to int8/uint8
    (round half to even)."""
    dtype = as_str(output_dtype, "output_dtype")
    if dtype not in ("int8", "uint8"):
        raise ValueError(f"output_dtype must be int8 or uint8, got {dtype!r}")
    info = np.iinfo(np.int8 if dtype == "int8" else np.uint8)
    q = np.round(input / _param(scale, input, axis, "scale"))
    if zero_point is not None:
        q = q + _param(zero_point, input, axis, "zero_point")
    return np.clip(q, info.min, info.max).astype(info.dtype)


@register("dequantize", since="iOS17")
def dequantize(input, scale, zero_point=None, axis=None):
    """MIL ``dequantize`` (iOS17+): ``scale * (input - zero_point)``."""
    x = np.asarray(input, np.float32)
    if zero_point is not None:
        x = x - _param(zero_point, input, axis, "zero_point")
    return x * _param(scale, input, axis, "scale")
