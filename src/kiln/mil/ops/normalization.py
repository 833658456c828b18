"""Normalization ops (coremltools defs iOS15/normalization.py; iOS17 relaxes parameter dtypes)."""

from __future__ import annotations

import numpy as np

from ..registry import prepares, register
from ._util import TORCH_ELEMENTWISE_MIN, as_float, as_int, norm_axes, to_torch, torch


def _per_channel(param, x, default):
    if param is None:
        return np.asarray(default, x.dtype)
    param = np.asarray(param, dtype=x.dtype)
    if param.shape != (x.shape[1],):
        raise ValueError(f"parameter of shape {list(param.shape)} does not match {x.shape[1]} channels")
    return param.reshape((1, -1) + (1,) * (x.ndim - 2))


@register("batch_norm")
def batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    """MIL ``batch_norm`` (iOS15+, iOS17): ``gamma * (x - mean) / sqrt(variance + eps) + beta`` per channel."""
    if not 3 <= x.ndim <= 5:
        raise ValueError(f"batch_norm needs rank 3..5, got {x.ndim}")
    eps = np.asarray(as_float(epsilon, "epsilon"), x.dtype)
    m = _per_channel(mean, x, 0.0)
    v = _per_channel(variance, x, 1.0)
    return _per_channel(gamma, x, 1.0) * (x - m) / np.sqrt(v + eps) + _per_channel(beta, x, 0.0)


@register("instance_norm")
def instance_norm(x, gamma=None, beta=None, epsilon=1e-5):
    """MIL ``instance_norm`` (iOS15+, iOS17): normalise each (n, c) over the spatial dims."""
    if not 3 <= x.ndim <= 4:
        raise ValueError(f"instance_norm needs rank 3..4, got {x.ndim}")
    axes = tuple(range(2, x.ndim))
    eps = np.asarray(as_float(epsilon, "epsilon"), x.dtype)
    mean = x.mean(axis=axes, keepdims=True)
    var = np.square(x - mean).mean(axis=axes, keepdims=True)
    return _per_channel(gamma, x, 1.0) * (x - mean) / np.sqrt(var + eps) + _per_channel(beta, x, 0.0)


@register("l2_norm")
def l2_norm(x, epsilon=1e-6):
    """MIL ``l2_norm`` (iOS15+, iOS17): ``x / sqrt(sum(x^2) + eps)`` over the last three dims."""
    if x.ndim < 3:
        raise ValueError(f"l2_norm needs rank >= 3, got {x.ndim}")
    eps = np.asarray(as_float(epsilon, "epsilon"), x.dtype)
    total = np.square(x).sum(axis=(-3, -2, -1), keepdims=True)
    return x / np.sqrt(total + eps)


@register("layer_norm")
def layer_norm(x, axes=None, gamma=None, beta=None, epsilon=1e-5):
    """MIL ``layer_norm`` (iOS15+, iOS17): ``gamma * (x - E[x]) / sqrt(Var[x] + eps) + beta`` over ``axes``.

    ``gamma``/``beta`` have shape ``x.shape[axes]``; default axes: all."""
    axes = tuple(range(x.ndim)) if axes is None else norm_axes(axes, x.ndim)
    eps = np.asarray(as_float(epsilon, "epsilon"), x.dtype)
    mean = x.mean(axis=axes, keepdims=True)
    centred = x - mean
    var = np.square(centred).mean(axis=axes, keepdims=True)
    y = centred / np.sqrt(var + eps)
    param_shape = [1] * x.ndim
    for a in sorted(axes):
        param_shape[a] = x.shape[a]
    expected = tuple(x.shape[a] for a in sorted(axes))
    for param, name in ((gamma, "gamma"), (beta, "beta")):
        if param is not None and tuple(np.shape(param)) != expected:
            raise ValueError(f"{name} has shape {list(np.shape(param))}, expected {list(expected)}")
    if gamma is not None:
        y = y * np.asarray(gamma, x.dtype).reshape(param_shape)
    if beta is not None:
        y = y + np.asarray(beta, x.dtype).reshape(param_shape)
    return y


@prepares("layer_norm")
def prepare_layer_norm(spec):
    """Over the trailing axes of a large float32 input (a transformer's norm over the model
    dimension): torch's fused layer norm, one pass instead of numpy's five. Others: None."""
    shape, ttype = spec.static_shape("x"), spec.input_types.get("x")
    if spec.dynamic != ("x",) or shape is None or ttype is None or ttype.dtype.storage != np.float32:
        return None
    if int(np.prod(shape, dtype=np.int64)) < TORCH_ELEMENTWISE_MIN:
        return None
    try:
        axes = tuple(range(len(shape))) if spec.consts.get("axes") is None else norm_axes(spec.consts["axes"], len(shape))
        epsilon = as_float(spec.consts.get("epsilon", 1e-5), "epsilon")
    except ValueError:
        return None
    trailing = tuple(range(len(shape) - len(axes), len(shape)))
    if tuple(sorted(axes)) != trailing or not axes:
        return None
    normalized = tuple(shape[a] for a in trailing)
    params = []
    for name in ("gamma", "beta"):
        value = spec.consts.get(name)
        if value is not None and (not isinstance(value, np.ndarray) or value.shape != normalized):
            return None  # the plain function reports the mismatch
        params.append(None if value is None else to_torch(np.array(value, np.float32)))
    layer_norm_fn = torch().nn.functional.layer_norm
    gamma, beta = params

    def kernel(x):
        return layer_norm_fn(to_torch(x), normalized, gamma, beta, epsilon).numpy()

    kernel.fresh = True
    return kernel


@register("local_response_norm")
def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """MIL ``local_response_norm`` (iOS15+, iOS17):
    ``x_c / (k + alpha / size * sum_{c' near c} x_{c'}^2) ^ beta`` across the channels (axis 1).

    coremltools documents rank 3..4, but its own suite runs rank 5 on every opset and Apple's runtime
    accepts it, so any rank >= 3 is taken: ``[n, C, *D]``. The window around channel ``c`` is
    ``c - size // 2 .. c + (size - 1) // 2`` (zero outside), as in the suite's torch reference."""
    if x.ndim < 3:
        raise ValueError(f"local_response_norm needs rank >= 3, got {x.ndim}")
    size = as_int(size, "size")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    squares = np.square(x.astype(np.float64))
    padded = np.pad(squares, [(0, 0), (size // 2, (size - 1) // 2)] + [(0, 0)] * (x.ndim - 2))
    windows = np.cumsum(padded, axis=1)
    windows = np.concatenate([windows[:, size - 1:size], windows[:, size:] - windows[:, :-size]], axis=1)
    scale = (as_float(k) + as_float(alpha) / size * windows) ** as_float(beta)
    return (x / scale).astype(x.dtype)
