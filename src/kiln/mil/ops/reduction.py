"""Reductions (coremltools defs iOS15/reduction.py; iOS17 adds ``output_dtype`` to arg-reductions)."""

from __future__ import annotations

import numpy as np

from ..registry import register
from ._util import as_bool, as_int, as_str, norm_axes, norm_axis


def _axes(x, axes):
    return tuple(range(x.ndim)) if axes is None else norm_axes(axes, x.ndim)


def _reduction(name, fn, doc):
    def impl(x, axes=None, keep_dims=False):
        if x.ndim == 0:
            raise ValueError(f"{name} needs a tensor of rank >= 1")
        return fn(x, _axes(x, axes), as_bool(keep_dims, "keep_dims"))

    impl.__name__ = name
    impl.__qualname__ = name
    impl.__doc__ = doc
    register(name)(impl)
    return impl


def _log_sum_exp(x, axes, keep):
    m = np.max(x, axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    y = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return y if keep else np.squeeze(y, axis=axes)


reduce_sum = _reduction("reduce_sum", lambda x, a, k: np.sum(x, axis=a, keepdims=k, dtype=x.dtype),
                        "MIL ``reduce_sum`` (iOS15+): sum over ``axes`` (default all).")
reduce_mean = _reduction("reduce_mean", lambda x, a, k: np.mean(x, axis=a, keepdims=k),
                         "MIL ``reduce_mean`` (iOS15+): mean over ``axes``.")
reduce_max = _reduction("reduce_max", lambda x, a, k: np.max(x, axis=a, keepdims=k),
                        "MIL ``reduce_max`` (iOS15+).")
reduce_min = _reduction("reduce_min", lambda x, a, k: np.min(x, axis=a, keepdims=k),
                        "MIL ``reduce_min`` (iOS15+).")
reduce_prod = _reduction("reduce_prod", lambda x, a, k: np.prod(x, axis=a, keepdims=k, dtype=x.dtype),
                         "MIL ``reduce_prod`` (iOS15+).")
reduce_l1_norm = _reduction("reduce_l1_norm", lambda x, a, k: np.sum(np.abs(x), axis=a, keepdims=k),
                            "MIL ``reduce_l1_norm`` (iOS15+): ``sum(|x|)``.")
reduce_l2_norm = _reduction("reduce_l2_norm", lambda x, a, k: np.sqrt(np.sum(np.square(x), axis=a, keepdims=k)),
                            "MIL ``reduce_l2_norm`` (iOS15+): ``sqrt(sum(x^2))``.")
reduce_sum_square = _reduction("reduce_sum_square", lambda x, a, k: np.sum(np.square(x), axis=a, keepdims=k),
                               "MIL ``reduce_sum_square`` (iOS15+): ``sum(x^2)``.")
reduce_log_sum = _reduction("reduce_log_sum", lambda x, a, k: np.log(np.sum(x, axis=a, keepdims=k)),
                            "MIL ``reduce_log_sum`` (iOS15+): ``log(sum(x))``.")
reduce_log_sum_exp = _reduction("reduce_log_sum_exp", _log_sum_exp,
                                "MIL ``reduce_log_sum_exp`` (iOS15+): ``log(sum(exp(x)))``, stable.")


def _arg(fn, x, axis, keep_dims, output_dtype="int32"):
    if x.ndim == 0:
        raise ValueError("arg-reduction needs a tensor of rank >= 1")
    axis = norm_axis(as_int(axis, "axis"), x.ndim)
    dtype = as_str(output_dtype, "output_dtype")
    if dtype not in ("int32", "uint16"):
        raise ValueError(f"output_dtype must be int32 or uint16, got {dtype!r}")
    y = fn(x, axis=axis)
    if as_bool(keep_dims, "keep_dims"):
        y = np.expand_dims(y, axis)
    return y.astype(np.int32 if dtype == "int32" else np.uint16)


@register("reduce_argmax")
def reduce_argmax(x, axis=-1, keep_dims=False):
    """MIL ``reduce_argmax`` (iOS15/16): index of the maximum along ``axis`` (first on ties), int32."""
    return _arg(np.argmax, x, axis, keep_dims)


@register("reduce_argmax", since="iOS17")
def reduce_argmax_ios17(x, axis=-1, keep_dims=False, output_dtype="int32"):
    """MIL ``reduce_argmax`` (iOS17+): adds ``output_dtype`` (``int32`` or ``uint16``)."""
    return _arg(np.argmax, x, axis, keep_dims, output_dtype)


@register("reduce_argmin")
def reduce_argmin(x, axis=-1, keep_dims=False):
    """MIL ``reduce_argmin`` (iOS15/16): index of the minimum along ``axis`` (first on ties), int32."""
    return _arg(np.argmin, x, axis, keep_dims)


@register("reduce_argmin", since="iOS17")
def reduce_argmin_ios17(x, axis=-1, keep_dims=False, output_dtype="int32"):
    """MIL ``reduce_argmin`` (iOS17+): adds ``output_dtype`` (``int32`` or ``uint16``)."""
    return _arg(np.argmin, x, axis, keep_dims, output_dtype)
