"""Pooling (coremltools defs iOS15/pool.py): ``avg_pool``, ``max_pool``, ``l2_pool``."""

from __future__ import annotations

import numpy as np

from ..registry import register
from ._util import as_bool, as_ints, as_str, spatial_padding


def _pool_geometry(x, kernel_sizes, strides, pad_type, pad, ceil_mode):
    n = x.ndim - 2
    if not 1 <= n <= 3:
        raise ValueError(f"pooling needs x of rank 3..5, got {x.ndim}")
    kernel = as_ints(kernel_sizes, "kernel_sizes")
    strides = as_ints(strides, "strides") if strides is not None else [1] * n
    if len(kernel) != n or len(strides) != n or any(k < 1 for k in kernel) or any(s < 1 for s in strides):
        raise ValueError(f"kernel_sizes {kernel} / strides {strides} invalid for {n} spatial dims")
    pad_type = as_str(pad_type, "pad_type").lower()
    padding = spatial_padding(pad_type, pad, x.shape[2:], kernel, strides, [1] * n)
    ceil_mode = as_bool(ceil_mode, "ceil_mode") and pad_type in ("valid", "custom")
    outs = []
    for size, k, s, (before, after) in zip(x.shape[2:], kernel, strides, padding):
        span = size + before + after - k
        if span < 0:
            raise ValueError(f"kernel {k} larger than padded input {size + before + after}")
        if ceil_mode:
            out = -(-span // s) + 1
            if (out - 1) * s >= size + before and before + after > 0:
                out -= 1
        else:
            out = span // s + 1
        outs.append(out)
    return n, kernel, strides, padding, outs


def _windows(x, n, kernel, strides, padding, outs, fill):
    """Array [N, C, *out, *kernel] of pooling windows over x padded with ``fill``."""
    pads = [(0, 0), (0, 0)]
    for (before, after), size, k, s, out in zip(padding, x.shape[2:], kernel, strides, outs):
        needed = (out - 1) * s + k
        pads.append((before, max(needed - size - before, 0)))
    xp = np.pad(x, pads, constant_values=fill)
    axes = tuple(range(2, 2 + n))
    win = np.lib.stride_tricks.sliding_window_view(xp, kernel, axis=axes)
    index = (slice(None), slice(None)) + tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(outs, strides))
    return win[index]


def _count(x, n, kernel, strides, padding, outs, exclude_padding):
    """Divisor of each average window: elements inside the input (or input plus padding)."""
    shape = x.shape[2:]
    mask = np.ones((1, 1) + tuple(shape), dtype=np.float32)
    if not exclude_padding:
        mask = np.pad(mask, [(0, 0), (0, 0)] + [tuple(p) for p in padding], constant_values=1.0)
        padding = [(0, 0)] * n
    windows = _windows(mask, n, kernel, strides, padding, outs, 0.0)
    return windows.sum(axis=tuple(range(-n, 0)))


@register("avg_pool")
def avg_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None,
             exclude_padding_from_average=False, ceil_mode=False):
    """MIL ``avg_pool`` (iOS15+): window mean; padded zeros are counted unless
    ``exclude_padding_from_average``."""
    n, kernel, strides, padding, outs = _pool_geometry(x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    windows = _windows(x, n, kernel, strides, padding, outs, 0.0)
    total = windows.sum(axis=tuple(range(-n, 0)))
    count = _count(x, n, kernel, strides, padding, outs, as_bool(exclude_padding_from_average))
    return total / np.maximum(count, 1.0).astype(x.dtype)


@register("max_pool")
def max_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False):
    """MIL ``max_pool`` (iOS15+): window maximum (padding never wins)."""
    n, kernel, strides, padding, outs = _pool_geometry(x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    windows = _windows(x, n, kernel, strides, padding, outs, -np.inf)
    return windows.max(axis=tuple(range(-n, 0)))


@register("l2_pool")
def l2_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False):
    """MIL ``l2_pool`` (iOS15+): ``sqrt(sum(x^2))`` over each window (1-D and 2-D)."""
    n, kernel, strides, padding, outs = _pool_geometry(x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    windows = _windows(x, n, kernel, strides, padding, outs, 0.0)
    return np.sqrt(np.square(windows).sum(axis=tuple(range(-n, 0))))
