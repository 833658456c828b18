"""Gather and scatter ops (coremltools defs iOS15/16/17 scatter_gather.py).

Index rules: iOS15/16 accept negative indices (counted from the end); from iOS17 indices must be
in ``[0, dim)`` (negative ones are out of bounds). iOS15/16, and iOS17+ with ``validate_indices=True``,
raise on an out-of-bounds index. With ``validate_indices=False`` (the iOS17+ default) MIL leaves the
result undefined; kiln then reads 0 for an out-of-bounds gather and drops an out-of-bounds scatter
update (as TensorFlow does on GPU), instead of failing a prediction that Core ML completes."""

from __future__ import annotations

import numpy as np

from ..registry import register
from ._util import as_bool, as_int, as_str, norm_axis


def _check_indices(indices, dim, allow_negative):
    idx = np.asarray(indices).astype(np.int64)
    low = -dim if allow_negative else 0
    if idx.size and (idx.min() < low or idx.max() >= dim):
        raise ValueError(f"index out of range [{low}, {dim}) (min {idx.min()}, max {idx.max()})")
    return np.where(idx < 0, idx + dim, idx)


def _lenient_indices(indices, dim):
    """iOS17+ without validation: (indices clipped into range, mask of the in-range ones)."""
    idx = np.asarray(indices).astype(np.int64)
    valid = (idx >= 0) & (idx < dim)
    return np.clip(idx, 0, max(dim - 1, 0)), valid


def _gather(x, indices, axis, batch_dims, allow_negative):
    axis = norm_axis(as_int(axis, "axis"), x.ndim)
    batch_dims = as_int(batch_dims, "batch_dims")
    if batch_dims < 0:
        batch_dims += np.ndim(indices)
    if not 0 <= batch_dims <= min(axis, np.ndim(indices)):
        raise ValueError(f"batch_dims {batch_dims} invalid for axis {axis}")
    if x.shape[:batch_dims] != np.shape(indices)[:batch_dims]:
        raise ValueError("batch dimensions of x and indices differ")
    idx = _check_indices(indices, x.shape[axis], allow_negative)
    if batch_dims == 0:
        return np.take(x, idx, axis=axis)
    return np.stack([
        _gather(x[i], idx[i], axis - 1, batch_dims - 1, True) for i in range(x.shape[0])
    ]) if x.shape[0] else np.zeros((0,) + np.take(x[:1], idx[:1], axis=axis).shape[1:], x.dtype)


@register("gather")
def gather(x, indices, axis=0):
    """MIL ``gather`` (iOS15): ``x`` indexed by ``indices`` along ``axis`` (tf.gather)."""
    return _gather(x, indices, axis, 0, True)


@register("gather", since="iOS16")
def gather_ios16(x, indices, axis=0, batch_dims=0):
    """MIL ``gather`` (iOS16): adds ``batch_dims``; output ``D[:axis] + N[batch_dims:] + D[axis+1:]``."""
    return _gather(x, indices, axis, batch_dims, True)


@register("gather", since="iOS17")
def gather_ios17(x, indices, axis=0, batch_dims=0, validate_indices=False):
    """MIL ``gather`` (iOS17+): indices must be in ``[0, dim)``; unvalidated out-of-bounds read 0."""
    if as_bool(validate_indices, "validate_indices"):
        return _gather(x, indices, axis, batch_dims, False)
    ax = norm_axis(as_int(axis, "axis"), x.ndim)
    clipped, valid = _lenient_indices(indices, x.shape[ax])
    out = _gather(x, clipped, axis, batch_dims, False)
    nb = as_int(batch_dims, "batch_dims")
    nb = nb + np.ndim(indices) if nb < 0 else nb
    mask = valid.reshape(valid.shape[:nb] + (1,) * (ax - nb) + valid.shape[nb:] + (1,) * (x.ndim - ax - 1))
    return np.where(mask, out, np.zeros((), out.dtype))


def _along_axis_index(indices, axis, dim, allow_negative):
    idx = _check_indices(indices, dim, allow_negative)
    grids = list(np.indices(idx.shape, sparse=True))
    grids[axis] = idx
    return tuple(grids)


def _gather_along_axis(x, indices, axis, allow_negative):
    axis = norm_axis(as_int(axis, "axis"), x.ndim)
    if np.ndim(indices) != x.ndim:
        raise ValueError(f"indices rank {np.ndim(indices)} differs from x rank {x.ndim}")
    for i, (a, b) in enumerate(zip(np.shape(indices), x.shape)):
        if i != axis and a > b:
            raise ValueError(f"indices dimension {i} ({a}) exceeds x ({b})")
    return x[_along_axis_index(indices, axis, x.shape[axis], allow_negative)]


@register("gather_along_axis")
def gather_along_axis(x, indices, axis=0):
    """MIL ``gather_along_axis`` (iOS15/16): ``out[..i..] = x[..indices[..i..]..]`` along ``axis``."""
    return _gather_along_axis(x, indices, axis, True)


@register("gather_along_axis", since="iOS17")
def gather_along_axis_ios17(x, indices, axis=0, validate_indices=False):
    """MIL ``gather_along_axis`` (iOS17+): indices in ``[0, dim)``; unvalidated out-of-bounds read 0."""
    if as_bool(validate_indices, "validate_indices"):
        return _gather_along_axis(x, indices, axis, False)
    ax = norm_axis(as_int(axis, "axis"), x.ndim)
    clipped, valid = _lenient_indices(indices, x.shape[ax])
    out = _gather_along_axis(x, clipped, axis, False)
    return np.where(valid, out, np.zeros((), out.dtype))


def _gather_nd(x, indices, batch_dims, allow_negative):
    batch_dims = as_int(batch_dims, "batch_dims")
    indices = np.asarray(indices)
    if batch_dims:
        if x.shape[:batch_dims] != indices.shape[:batch_dims]:
            raise ValueError("batch dimensions of x and indices differ")
        return np.stack([_gather_nd(x[i], indices[i], batch_dims - 1, allow_negative)
                         for i in range(x.shape[0])])
    k = indices.shape[-1] if indices.ndim else 0
    if indices.ndim == 0 or k > x.ndim:
        raise ValueError(f"indices of shape {list(indices.shape)} invalid for rank {x.ndim}")
    parts = tuple(_check_indices(indices[..., i], x.shape[i], allow_negative) for i in range(k))
    return x[parts]


@register("gather_nd")
def gather_nd(x, indices):
    """MIL ``gather_nd`` (iOS15): slices ``x[indices[i..]]``; output ``K[:-1] + D[K[-1]:]``."""
    return _gather_nd(x, indices, 0, True)


@register("gather_nd", since="iOS16")
def gather_nd_ios16(x, indices, batch_dims=0):
    """MIL ``gather_nd`` (iOS16): adds ``batch_dims``."""
    return _gather_nd(x, indices, batch_dims, True)


@register("gather_nd", since="iOS17")
def gather_nd_ios17(x, indices, batch_dims=0, validate_indices=False):
    """MIL ``gather_nd`` (iOS17+): indices in ``[0, dim)``; unvalidated out-of-bounds read 0."""
    if as_bool(validate_indices, "validate_indices"):
        return _gather_nd(x, indices, batch_dims, False)
    indices = np.asarray(indices).astype(np.int64)
    nb = as_int(batch_dims, "batch_dims")
    k = indices.shape[-1] if indices.ndim else 0
    if indices.ndim == 0 or nb + k > x.ndim:
        raise ValueError(f"indices of shape {list(indices.shape)} invalid for rank {x.ndim}")
    dims = np.asarray(x.shape[nb:nb + k], np.int64)
    valid = ((indices >= 0) & (indices < dims)).all(axis=-1)
    out = _gather_nd(x, np.clip(indices, 0, np.maximum(dims - 1, 0)), nb, False)
    return np.where(valid.reshape(valid.shape + (1,) * (out.ndim - valid.ndim)), out, np.zeros((), out.dtype))


_UFUNCS = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "max": np.maximum,
    "min": np.minimum,
}


def _apply(out, index, updates, mode):
    mode = as_str(mode, "mode")
    if mode == "update":
        out[index] = updates
    elif mode in _UFUNCS:
        if mode == "div" and out.dtype.kind in "iu":
            np.floor_divide.at(out, index, updates)
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                _UFUNCS[mode].at(out, index, updates)
    else:
        raise ValueError(f"unknown scatter mode {mode!r}")
    return out


def _scatter(data, indices, updates, axis, mode, allow_negative, lenient=False):
    """``updates`` has ``data``'s shape with the ``axis`` dimension replaced by ``indices``' whole
    shape (coremltools' type inference): indices of any rank >= 1 act as their flattening, in order."""
    axis = norm_axis(as_int(axis, "axis"), data.ndim)
    indices = np.asarray(indices)
    if indices.ndim == 0:
        raise ValueError("scatter indices must have rank 1 or more")
    expected = data.shape[:axis] + indices.shape + data.shape[axis + 1:]
    if np.shape(updates) != expected:
        raise ValueError(f"updates shape {list(np.shape(updates))}, expected {list(expected)}")
    indices = indices.reshape(-1)
    updates = np.asarray(updates, data.dtype).reshape(data.shape[:axis] + (indices.size,) + data.shape[axis + 1:])
    if lenient:
        idx, valid = _lenient_indices(indices, data.shape[axis])
    else:
        idx = _check_indices(indices, data.shape[axis], allow_negative)
        valid = np.ones(idx.shape, bool)
    out = np.moveaxis(data.copy(), axis, 0)
    moved = np.moveaxis(updates, axis, 0)
    _apply(out, idx[valid], moved[valid], mode)
    return np.moveaxis(out, 0, axis)


@register("scatter")
def scatter(data, indices, updates, axis=0, mode="add"):
    """MIL ``scatter`` (iOS15/16): combine ``updates`` into ``data`` at ``indices`` along ``axis``
    by ``mode`` (update, add, sub, mul, div, max, min)."""
    return _scatter(data, indices, updates, axis, mode, True)


@register("scatter", since="iOS17")
def scatter_ios17(data, indices, updates, axis=0, mode="add", validate_indices=False):
    """MIL ``scatter`` (iOS17+): indices in ``[0, dim)``; unvalidated out-of-bounds updates dropped."""
    return _scatter(data, indices, updates, axis, mode, False, lenient=not as_bool(validate_indices, "validate_indices"))


def _scatter_along_axis(data, indices, updates, axis, mode, allow_negative, lenient=False):
    axis = norm_axis(as_int(axis, "axis"), data.ndim)
    if np.shape(indices) != np.shape(updates) or np.ndim(indices) != data.ndim:
        raise ValueError("indices and updates must have the same shape and data's rank")
    updates = np.asarray(updates, data.dtype)
    if not lenient:
        index = _along_axis_index(indices, axis, data.shape[axis], allow_negative)
        return _apply(data.copy(), index, updates, mode)
    clipped, valid = _lenient_indices(indices, data.shape[axis])
    index = _along_axis_index(clipped, axis, data.shape[axis], False)
    index = tuple(np.broadcast_to(i, clipped.shape)[valid] for i in index)
    return _apply(data.copy(), index, updates[valid], mode)


@register("scatter_along_axis")
def scatter_along_axis(data, indices, updates, axis=0, mode="add"):
    """MIL ``scatter_along_axis`` (iOS15/16): elementwise scatter along ``axis``."""
    return _scatter_along_axis(data, indices, updates, axis, mode, True)


@register("scatter_along_axis", since="iOS17")
def scatter_along_axis_ios17(data, indices, updates, axis=0, mode="add", validate_indices=False):
    """MIL ``scatter_along_axis`` (iOS17+): indices in ``[0, dim)``; unvalidated out-of-bounds dropped."""
    return _scatter_along_axis(data, indices, updates, axis, mode, False, lenient=not as_bool(validate_indices, "validate_indices"))


def _scatter_nd(data, indices, updates, mode, allow_negative, lenient=False):
    indices = np.asarray(indices)
    k = indices.shape[-1] if indices.ndim else 0
    if indices.ndim == 0 or k > data.ndim:
        raise ValueError(f"indices of shape {list(indices.shape)} invalid for rank {data.ndim}")
    expected = indices.shape[:-1] + data.shape[k:]
    if np.shape(updates) != expected:
        raise ValueError(f"updates shape {list(np.shape(updates))}, expected {list(expected)}")
    updates = np.asarray(updates, data.dtype)
    if not lenient:
        index = tuple(_check_indices(indices[..., i], data.shape[i], allow_negative) for i in range(k))
        return _apply(data.copy(), index, updates, mode)
    parts = [_lenient_indices(indices[..., i], data.shape[i]) for i in range(k)]
    valid = np.logical_and.reduce([v for _, v in parts]) if parts else np.ones(indices.shape[:-1], bool)
    index = tuple(i[valid] for i, _ in parts)
    return _apply(data.copy(), index, updates[valid], mode)


@register("scatter_nd")
def scatter_nd(data, indices, updates, mode="add"):
    """MIL ``scatter_nd`` (iOS15/16): ``output[indices[i..]] (mode)= updates[i..]``."""
    return _scatter_nd(data, indices, updates, mode, True)


@register("scatter_nd", since="iOS17")
def scatter_nd_ios17(data, indices, updates, mode="add", validate_indices=False):
    """MIL ``scatter_nd`` (iOS17+): indices in ``[0, dim)``; unvalidated out-of-bounds updates dropped."""
    return _scatter_nd(data, indices, updates, mode, False, lenient=not as_bool(validate_indices, "validate_indices"))
