"""Transformer ops (coremltools defs iOS18/transformers.py)."""

from __future__ import annotations

import math

import numpy as np

from ..registry import register


@register("scaled_dot_product_attention", since="iOS18")
def scaled_dot_product_attention(query, key, value, attn_mask=None):
    """MIL ``scaled_dot_product_attention`` (iOS18+): ``softmax(Q K^T / sqrt(E) + mask) V``; a bool
    mask keeps positions where it is true (others get -inf)."""
    if query.ndim < 3 or key.ndim != query.ndim or value.ndim != query.ndim:
        raise ValueError("query, key and value must share a rank >= 3")
    scores = np.matmul(query, np.swapaxes(key, -1, -2)) / np.asarray(math.sqrt(query.shape[-1]), query.dtype)
    if attn_mask is not None:
        if attn_mask.dtype == np.bool_:
            scores = np.where(attn_mask, scores, -np.inf)
        else:
            scores = scores + attn_mask.astype(scores.dtype)
    scores = scores - np.max(scores, axis=-1, keepdims=True)
    weights = np.exp(scores)
    weights /= np.sum(weights, axis=-1, keepdims=True)
    return np.matmul(weights, value)
