"""Random sampling ops (coremltools defs iOS15/random.py).

With ``seed >= 0`` every run draws the same values (a generator seeded per invocation); with
``seed == -1`` an op keeps one unseeded generator across runs. Distributions follow the MIL
definitions; the bit streams cannot match Apple's generator."""

from __future__ import annotations

import numpy as np

from ..registry import OpContext, register
from ._util import as_float, as_int, as_ints, as_str


def _generator(seed, ctx: OpContext) -> np.random.Generator:
    seed = as_int(seed, "seed")
    if seed >= 0:
        return np.random.default_rng(seed)
    rng = ctx.state.get("rng")
    if rng is None:
        rng = ctx.state["rng"] = np.random.default_rng()
    return rng


def _shape(shape):
    dims = as_ints(shape, "shape")
    if any(d < 0 for d in dims):
        raise ValueError(f"negative dimension in shape {dims}")
    return dims


@register("random_bernoulli", context=True)
def random_bernoulli(shape, prob=0.5, seed=-1, *, ctx: OpContext):
    """MIL ``random_bernoulli`` (iOS15+): 1 with probability ``prob``, else 0."""
    p = as_float(prob, "prob")
    return (_generator(seed, ctx).random(_shape(shape)) < p).astype(np.float32)


@register("random_normal", context=True)
def random_normal(shape, mean=0.0, stddev=1.0, seed=-1, *, ctx: OpContext):
    """MIL ``random_normal`` (iOS15+): normal samples with ``mean`` and ``stddev``."""
    return _generator(seed, ctx).normal(as_float(mean), as_float(stddev), _shape(shape)).astype(np.float32)


@register("random_uniform", context=True)
def random_uniform(shape, low=0.0, high=1.0, seed=-1, *, ctx: OpContext):
    """MIL ``random_uniform`` (iOS15+): uniform samples in ``[low, high)``."""
    lo, hi = as_float(low), as_float(high)
    return (lo + (hi - lo) * _generator(seed, ctx).random(_shape(shape))).astype(np.float32)


@register("random_categorical", context=True)
def random_categorical(x, mode="logits", size=1, seed=-1, *, ctx: OpContext):
    """MIL ``random_categorical`` (iOS15+): ``size`` category indices per distribution in the last
    axis of ``x`` (``logits``, or ``probs`` which are log-transformed first)."""
    mode = as_str(mode, "mode")
    logits = np.asarray(x, np.float64)
    if mode == "probs":
        with np.errstate(divide="ignore"):
            logits = np.log(logits)
    elif mode != "logits":
        raise ValueError(f"unknown mode {mode!r}")
    n = as_int(size, "size")
    if logits.ndim < 1 or n < 0:
        raise ValueError("x must have rank >= 1 and size must be non-negative")
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    flat = p.reshape(-1, p.shape[-1])
    rng = _generator(seed, ctx)
    draws = np.stack([rng.choice(flat.shape[1], size=n, p=row) for row in flat]) if flat.size else np.zeros((0, n))
    return draws.reshape(p.shape[:-1] + (n,)).astype(np.float32)
