"""Activation ops (coremltools defs iOS15/activation.py; iOS17 variants only relax parameter dtypes,
so one implementation serves both)."""

from __future__ import annotations

import math

import numpy as np

from ..registry import prepares, register
from ._util import as_str, erf as _erf, sigmoid as _sigmoid, sigmoid_in_place as _sigmoid_in_place, torch
from ._util import TORCH_ELEMENTWISE_MIN, as_int, norm_axis, to_torch, torch_elementwise


def _channel(param, x, name):
    """Broadcast a per-channel [C] parameter over x of shape [B, C, ...]."""
    param = np.asarray(param, dtype=x.dtype)
    if x.ndim < 2 or param.shape != (x.shape[1],):
        raise ValueError(f"{name} of shape {list(param.shape)} does not match channels of x {list(x.shape)}")
    return param.reshape((1, -1) + (1,) * (x.ndim - 2))


@register("relu", exact=True)
def relu(x):
    """MIL ``relu`` (iOS15+): ``max(x, 0)``."""
    return np.maximum(x, np.zeros((), x.dtype))


@register("relu6")
def relu6(x):
    """MIL ``relu6`` (iOS15+): ``min(max(x, 0), 6)``."""
    return np.minimum(np.maximum(x, 0), 6).astype(x.dtype)


@register("sigmoid")
def sigmoid(x):
    """MIL ``sigmoid`` (iOS15+): ``1 / (1 + e^-x)``."""
    with np.errstate(over="ignore"):
        return _sigmoid(x)


@register("silu")
def silu(x):
    """MIL ``silu`` (iOS15+): ``x * sigmoid(x)``."""
    if torch_elementwise(x):
        t = torch()
        return t.nn.functional.silu(t.from_numpy(x)).numpy()
    with np.errstate(over="ignore"):
        return x * _sigmoid(x)


@register("softplus")
def softplus(x):
    """MIL ``softplus`` (iOS15+): ``log(1 + e^x)`` (computed stably)."""
    return np.logaddexp(0, x)


@register("softsign")
def softsign(x):
    """MIL ``softsign`` (iOS15+): ``x / (1 + |x|)``."""
    return x / (1 + np.abs(x))


@register("elu")
def elu(x, alpha):
    """MIL ``elu`` (iOS15+, iOS17): ``x`` if ``x > 0`` else ``alpha * (e^x - 1)``."""
    alpha = np.asarray(alpha, x.dtype)
    with np.errstate(over="ignore"):
        return np.where(x > 0, x, alpha * np.expm1(x))


@register("leaky_relu")
def leaky_relu(x, alpha):
    """MIL ``leaky_relu`` (iOS15+, iOS17): ``x`` if ``x >= 0`` else ``alpha * x``."""
    return np.where(x >= 0, x, np.asarray(alpha, x.dtype) * x)


@register("thresholded_relu")
def thresholded_relu(x, alpha):
    """MIL ``thresholded_relu`` (iOS15+, iOS17): ``x`` if ``x >= alpha`` else ``0``."""
    return np.where(x >= np.asarray(alpha, x.dtype), x, np.zeros((), x.dtype))


@register("clamped_relu")
def clamped_relu(x, alpha, beta):
    """MIL ``clamped_relu`` (iOS15+, iOS17): ``min(beta, x)`` if ``x >= 0`` else ``min(beta, alpha*x)``."""
    alpha = np.asarray(alpha, x.dtype)
    beta = np.asarray(beta, x.dtype)
    return np.minimum(beta, np.where(x >= 0, x, alpha * x))


@register("linear_activation")
def linear_activation(x, alpha, beta):
    """MIL ``linear_activation`` (iOS15+, iOS17): ``alpha * x + beta``."""
    return np.asarray(alpha, x.dtype) * x + np.asarray(beta, x.dtype)


@register("scaled_tanh")
def scaled_tanh(x, alpha, beta):
    """MIL ``scaled_tanh`` (iOS15+, iOS17): ``alpha * tanh(beta * x)``."""
    return np.asarray(alpha, x.dtype) * np.tanh(np.asarray(beta, x.dtype) * x)


@register("sigmoid_hard")
def sigmoid_hard(x, alpha, beta):
    """MIL ``sigmoid_hard`` (iOS15+, iOS17): ``min(max(alpha * x + beta, 0), 1)``."""
    return np.clip(np.asarray(alpha, x.dtype) * x + np.asarray(beta, x.dtype), 0, 1).astype(x.dtype)


@register("prelu")
def prelu(x, alpha):
    """MIL ``prelu`` (iOS15+, iOS17): per channel ``x`` if ``x > 0`` else ``alpha_c * x``; x rank 3-5."""
    if not 3 <= x.ndim <= 5:
        raise ValueError(f"prelu needs x of rank 3..5, got {x.ndim}")
    return np.where(x > 0, x, _channel(alpha, x, "alpha") * x)


@register("softplus_parametric")
def softplus_parametric(x, alpha, beta):
    """MIL ``softplus_parametric`` (iOS15+, iOS17): ``alpha_c * log(1 + e^(beta_c * x))`` per channel."""
    a = _channel(alpha, x, "alpha")
    b = _channel(beta, x, "beta")
    return a * np.logaddexp(0, b * x)


@register("softmax")
def softmax(x, axis=-1):
    """MIL ``softmax`` (iOS15+): ``exp(x) / sum(exp(x), axis)``, max-subtracted for stability."""
    axis = int(axis)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


@register("gelu")
def gelu(x, mode="EXACT"):
    """MIL ``gelu`` (iOS15+): ``EXACT`` (erf), ``TANH_APPROXIMATION`` or ``SIGMOID_APPROXIMATION``."""
    mode = as_str(mode, "mode")
    if mode == "EXACT":
        return 0.5 * x * (1.0 + _erf(x / np.asarray(math.sqrt(2.0), x.dtype)))
    if mode == "TANH_APPROXIMATION":
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * np.power(x, 3))
        return 0.5 * x * (1.0 + np.tanh(inner))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(1.702 * x)
    raise ValueError(f"unknown gelu mode {mode!r}")


# -- prepared kernels (see kiln.mil.registry): in-place variants for fusion ---------------------


def _float_input(spec) -> bool:
    source = spec.input_types.get("x")
    return spec.dynamic == ("x",) and source is not None and source.dtype.storage == np.float32


@prepares("relu")
def prepare_relu(spec):
    if not _float_input(spec):
        return None
    zero = np.zeros((), np.float32)

    def kernel(x):
        return np.maximum(x, zero)

    kernel.fresh = True
    kernel.inplace = lambda x: np.maximum(x, zero, out=x)
    return kernel


@prepares("softmax")
def prepare_softmax(spec):
    """Softmax of a large float32 input on torch (one fused pass, its threads: attention scores of
    a 15 s Parakeet encoder are [8, 188, 188] per layer); small inputs keep numpy's."""
    shape = spec.static_shape("x")
    if not _float_input(spec) or shape is None:
        return None
    try:
        axis = norm_axis(as_int(spec.consts.get("axis", -1), "axis"), len(shape))
    except (ValueError, TypeError):
        return None
    if int(np.prod(shape, dtype=np.int64)) < TORCH_ELEMENTWISE_MIN:
        return None
    t = torch()

    def kernel(x):
        return t.softmax(to_torch(x), dim=axis).numpy()

    kernel.fresh = True
    return kernel


# The plan runs every step with overflow warnings off (ExecutionPlan.run), so the prepared
# sigmoid needs no errstate of its own (it costs more than the arithmetic on small tensors).


@prepares("sigmoid")
def prepare_sigmoid(spec):
    if not _float_input(spec):
        return None

    def kernel(x):
        return _sigmoid(x)

    kernel.fresh = True
    kernel.inplace = _sigmoid_in_place
    return kernel
