"""Tensor transformations (coremltools defs iOS15/16/17/18 tensor_transformation.py)."""

from __future__ import annotations

import numpy as np

from ..registry import prepares, register
from ._util import as_bool, as_bools, as_int, as_ints, norm_axes, norm_axis


@register("expand_dims", exact=True)
def expand_dims(x, axes):
    """MIL ``expand_dims`` (iOS15+, iOS17 more dtypes): insert size-1 dims at ``axes``
    (each in ``[-rank-1, rank]`` counted in the output)."""
    axes = as_ints(axes, "axes")
    out_rank = x.ndim + len(axes)
    positions = sorted(norm_axis(a, out_rank, "axes") for a in axes)
    if len(set(positions)) != len(positions):
        raise ValueError(f"axes {axes} repeat a position")
    return np.expand_dims(x, tuple(positions))


@register("squeeze", exact=True)
def squeeze(x, axes=None):
    """MIL ``squeeze`` (iOS15+, iOS17): drop size-1 dims (all, or those in ``axes``; non-1 dims
    listed in ``axes`` are kept, as in PyTorch)."""
    if axes is None:
        return np.squeeze(x)
    axes = norm_axes(axes, x.ndim)
    return np.squeeze(x, axis=tuple(a for a in axes if x.shape[a] == 1))


@register("transpose", exact=True)
def transpose(x, perm):
    """MIL ``transpose`` (iOS15+, iOS17): permute dims by ``perm`` (negative entries allowed)."""
    perm = [norm_axis(p, x.ndim, "perm") for p in as_ints(perm, "perm")]
    if sorted(perm) != list(range(x.ndim)):
        raise ValueError(f"perm {perm} is not a permutation of rank {x.ndim}")
    return np.transpose(x, perm)


def _reshape_target(x, shape, ios17):
    dims = as_ints(shape, "shape")
    if not ios17 and 0 in dims and len(dims) != x.ndim:
        raise ValueError(f"shape {dims} uses 0 but does not have rank {x.ndim} (iOS15 rule)")
    out = list(dims)
    for i, d in enumerate(dims):
        if d == 0:
            j = x.ndim - (len(dims) - i) if ios17 else i
            out[i] = x.shape[j] if 0 <= j < x.ndim else 1
    if out.count(-1) > 1 or any(d < -1 for d in out):
        raise ValueError(f"invalid reshape target {dims}")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1], dtype=np.int64))
        if known == 0 or x.size % known:
            raise ValueError(f"cannot infer -1 in {dims} for {x.size} elements")
        out[out.index(-1)] = x.size // known
    if int(np.prod(out, dtype=np.int64)) != x.size:
        raise ValueError(f"cannot reshape {list(x.shape)} to {dims}")
    return out


@register("reshape", exact=True)
def reshape(x, shape):
    """MIL ``reshape`` (iOS15/16): ``-1`` infers a dim; ``0`` copies ``x.shape[i]`` (needs equal rank)."""
    return np.reshape(x, _reshape_target(x, shape, ios17=False))


@register("reshape", since="iOS17", exact=True)
def reshape_ios17(x, shape):
    """MIL ``reshape`` (iOS17+): each ``0`` copies the dim of ``x`` aligned from the right (1 when
    out of range)."""
    return np.reshape(x, _reshape_target(x, shape, ios17=True))


@register("reshape_like", since="iOS16", tuple_params=("ref_tensors", "begins", "ends", "end_masks"))
def reshape_like(x, ref_tensors, begins, ends, end_masks):
    """MIL ``reshape_like`` (iOS16+): reshape to slices of the reference tensors' shapes."""
    if not len(ref_tensors) == len(begins) == len(ends) == len(end_masks):
        raise ValueError("ref_tensors, begins, ends and end_masks must have equal length")
    shape: list[int] = []
    for ref, begin, end, end_mask in zip(ref_tensors, begins, ends, end_masks):
        dims = list(np.shape(ref))
        b = as_int(begin, "begins")
        shape += dims[b:] if as_bool(end_mask) else dims[b:as_int(end, "ends")]
    if int(np.prod(shape, dtype=np.int64)) != x.size:
        raise ValueError(f"cannot reshape {list(x.shape)} to {shape}")
    return np.reshape(x, shape)


@register("reverse", exact=True)
def reverse(x, axes=None):
    """MIL ``reverse`` (iOS15+, iOS17): flip ``x`` along ``axes`` (default all)."""
    return np.flip(x, axis=None if axes is None else norm_axes(axes, x.ndim))


@register("reverse_sequence")
def reverse_sequence(x, lengths, seq_axis=0, batch_axis=0):
    """MIL ``reverse_sequence`` (iOS15+, iOS17): per batch entry, reverse the first ``lengths[b]``
    elements along ``seq_axis``."""
    seq_axis = norm_axis(as_int(seq_axis, "seq_axis"), x.ndim)
    batch_axis = norm_axis(as_int(batch_axis, "batch_axis"), x.ndim)
    if seq_axis == batch_axis:
        raise ValueError("seq_axis and batch_axis must differ")
    lengths = as_ints(lengths, "lengths")
    if len(lengths) != x.shape[batch_axis]:
        raise ValueError(f"{len(lengths)} lengths for batch dimension {x.shape[batch_axis]}")
    out = x.copy()
    for b, n in enumerate(lengths):
        if not 0 <= n <= x.shape[seq_axis]:
            raise ValueError(f"length {n} out of range")
        src = [slice(None)] * x.ndim
        src[batch_axis] = b
        src[seq_axis] = slice(0, n)
        out[tuple(src)] = np.flip(x[tuple(src)], axis=seq_axis - (1 if batch_axis < seq_axis else 0))
    return out


def _slice_index(x, begin, end, stride, begin_mask, end_mask, squeeze_mask):
    rank = x.ndim
    begin = as_ints(begin, "begin")
    end = as_ints(end, "end")
    stride = as_ints(stride, "stride") if stride is not None else [1] * rank
    if not len(begin) == len(end) == len(stride) == rank:
        raise ValueError(f"begin/end/stride must have {rank} entries")
    begin_mask = as_bools(begin_mask, rank, "begin_mask")
    end_mask = as_bools(end_mask, rank, "end_mask")
    squeeze_mask = as_bools(squeeze_mask, rank, "squeeze_mask")
    index = []
    for i in range(rank):
        size, s = x.shape[i], stride[i]
        if s == 0:
            raise ValueError("stride must be nonzero")
        if squeeze_mask[i]:
            b = begin[i] + size if begin[i] < 0 else begin[i]
            if not 0 <= b < size:
                raise ValueError(f"squeezed index {begin[i]} out of range for dimension {size}")
            index.append(b)
            continue
        b = None if begin_mask[i] else begin[i]
        e = None if end_mask[i] else end[i]
        index.append(slice(b, e, s))
    return tuple(index)


@register("slice_by_index", exact=True)
def slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    """MIL ``slice_by_index`` (iOS15+, iOS17): numpy-style ``x[begin:end:stride, ...]`` with masks;
    ``squeeze_mask`` takes the single index ``begin[i]``."""
    return x[_slice_index(x, begin, end, stride, begin_mask, end_mask, squeeze_mask)]


@register("slice_update", since="iOS18")
def slice_update(x, update, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    """MIL ``slice_update`` (iOS18+): ``x`` with the ``slice_by_index`` region replaced by ``update``."""
    index = _slice_index(x, begin, end, stride, begin_mask, end_mask, squeeze_mask)
    out = x.copy()
    if out[index].shape != np.shape(update):
        raise ValueError(f"update shape {list(np.shape(update))} does not match slice {list(out[index].shape)}")
    out[index] = update
    return out


@register("slice_by_size", exact=True)
def slice_by_size(x, begin, size):
    """MIL ``slice_by_size`` (iOS15+, iOS17): ``size[i]`` elements from ``begin[i]`` (-1: to the end)."""
    begin = as_ints(begin, "begin")
    size = as_ints(size, "size")
    if len(begin) != x.ndim or len(size) != x.ndim:
        raise ValueError(f"begin/size must have {x.ndim} entries")
    index = []
    for b, n, dim in zip(begin, size, x.shape):
        b = b + dim if b < 0 else b
        stop = dim if n == -1 else b + n
        if not 0 <= b <= dim or n < -1 or stop > dim:
            raise ValueError(f"slice begin {b} size {n} out of range for dimension {dim}")
        index.append(slice(b, stop))
    return x[tuple(index)]


@register("sliding_windows", exact=True)
def sliding_windows(x, axis, size, stride=1):
    """MIL ``sliding_windows`` (iOS15+, iOS17): windows of ``size`` every ``stride`` along ``axis``,
    inserted as a new dim after it: ``[*d0, (d_axis - size) // stride + 1, size, *dn]``."""
    axis = norm_axis(as_int(axis, "axis"), x.ndim)
    size, stride = as_int(size, "size"), as_int(stride, "stride")
    if size < 1 or stride < 1 or size > x.shape[axis]:
        raise ValueError(f"invalid window size {size} / stride {stride} for dimension {x.shape[axis]}")
    win = np.lib.stride_tricks.sliding_window_view(x, size, axis=axis)  # [..., n, ..., size]
    index = [slice(None)] * win.ndim
    index[axis] = slice(None, None, stride)
    win = win[tuple(index)]
    return np.moveaxis(win, -1, axis + 1)


def _depth_to_space(x, block):
    n, c, h, w = x.shape
    if block < 1 or c % (block * block):
        raise ValueError(f"channels {c} not divisible by block_size^2 = {block * block}")
    y = x.reshape(n, block, block, c // (block * block), h, w)
    return y.transpose(0, 3, 4, 1, 5, 2).reshape(n, c // (block * block), h * block, w * block)


def _space_to_depth(x, block):
    n, c, h, w = x.shape
    if block < 1 or h % block or w % block:
        raise ValueError(f"spatial dims {h}x{w} not divisible by block_size {block}")
    y = x.reshape(n, c, h // block, block, w // block, block)
    return y.transpose(0, 3, 5, 1, 2, 4).reshape(n, c * block * block, h // block, w // block)


def _rank4(x, name):
    if x.ndim != 4:
        raise ValueError(f"{name} needs a rank-4 input, got rank {x.ndim}")


@register("depth_to_space", exact=True)
def depth_to_space(x, block_size):
    """MIL ``depth_to_space`` (iOS15+): DCR order (TensorFlow), ``[n, C/b^2, H*b, W*b]``."""
    _rank4(x, "depth_to_space")
    return _depth_to_space(x, as_int(block_size, "block_size"))


@register("space_to_depth", exact=True)
def space_to_depth(x, block_size):
    """MIL ``space_to_depth`` (iOS15+): inverse of ``depth_to_space``, ``[n, C*b^2, H/b, W/b]``."""
    _rank4(x, "space_to_depth")
    return _space_to_depth(x, as_int(block_size, "block_size"))


@register("pixel_shuffle", exact=True)
def pixel_shuffle(x, upscale_factor):
    """MIL ``pixel_shuffle`` (iOS15+): PyTorch ``PixelShuffle`` (CRD order)."""
    _rank4(x, "pixel_shuffle")
    f = as_int(upscale_factor, "upscale_factor")
    n, c, h, w = x.shape
    if f < 1 or c % (f * f):
        raise ValueError(f"channels {c} not divisible by {f * f}")
    y = x.reshape(n, c // (f * f), f, f, h, w)
    return y.transpose(0, 1, 4, 2, 5, 3).reshape(n, c // (f * f), h * f, w * f)


@register("pixel_unshuffle", since="iOS16", exact=True)
def pixel_unshuffle(x, downscale_factor):
    """MIL ``pixel_unshuffle`` (iOS16+): PyTorch ``PixelUnshuffle``."""
    _rank4(x, "pixel_unshuffle")
    f = as_int(downscale_factor, "downscale_factor")
    n, c, h, w = x.shape
    if f < 1 or h % f or w % f:
        raise ValueError(f"spatial dims {h}x{w} not divisible by {f}")
    y = x.reshape(n, c, h // f, f, w // f, f)
    return y.transpose(0, 1, 3, 5, 2, 4).reshape(n, c * f * f, h // f, w // f)


@register("space_to_batch")
def space_to_batch(x, block_shape, paddings):
    """MIL ``space_to_batch`` (iOS15+): TensorFlow ``space_to_batch_nd`` on NCHW."""
    _rank4(x, "space_to_batch")
    bh, bw = as_ints(block_shape, "block_shape")
    pads = np.asarray(paddings).reshape(2, 2)
    xp = np.pad(x, [(0, 0), (0, 0), tuple(pads[0]), tuple(pads[1])])
    n, c, h, w = xp.shape
    if h % bh or w % bw:
        raise ValueError(f"padded spatial dims {h}x{w} not divisible by block {bh}x{bw}")
    y = xp.reshape(n, c, h // bh, bh, w // bw, bw).transpose(3, 5, 0, 1, 2, 4)
    return y.reshape(n * bh * bw, c, h // bh, w // bw)


@register("batch_to_space")
def batch_to_space(x, block_shape, crops):
    """MIL ``batch_to_space`` (iOS15+): TensorFlow ``batch_to_space_nd`` on NCHW."""
    _rank4(x, "batch_to_space")
    bh, bw = as_ints(block_shape, "block_shape")
    crops = np.asarray(crops).reshape(2, 2)
    n, c, h, w = x.shape
    if n % (bh * bw):
        raise ValueError(f"batch {n} not divisible by block {bh}x{bw}")
    y = x.reshape(bh, bw, n // (bh * bw), c, h, w).transpose(2, 3, 4, 0, 5, 1)
    y = y.reshape(n // (bh * bw), c, h * bh, w * bw)
    return y[:, :, crops[0, 0]: h * bh - crops[0, 1], crops[1, 0]: w * bw - crops[1, 1]]


# -- prepared kernels (see kiln.mil.registry): the plain functions above run once, on a zero-size-
# stride probe of the static input shape, to fix the result's shape or index tuple. --------------


def _probe(spec, name="x"):
    """A read-only array of the input's static shape and storage dtype that holds no data."""
    shape = spec.static_shape(name)
    ttype = spec.input_types.get(name)
    if shape is None or ttype is None:
        return None
    return np.broadcast_to(np.zeros((), ttype.dtype.storage), shape)


def _prepare_reshape_like(fn):
    """Ops whose result is ``x`` in a new shape (same element order): ``x.reshape(shape)``."""

    def prepare(spec):
        probe = _probe(spec)
        if probe is None or set(spec.dynamic) != {"x"}:
            return None
        try:
            shape = tuple(fn(probe, **spec.consts).shape)
        except (ValueError, TypeError, IndexError):
            return None  # invalid attributes: the plain function reports them at run time
        return lambda x: x.reshape(shape)

    return prepare


prepares("expand_dims")(_prepare_reshape_like(expand_dims))
prepares("squeeze")(_prepare_reshape_like(squeeze))
prepares("reshape")(_prepare_reshape_like(reshape))
prepares("reshape", since="iOS17")(_prepare_reshape_like(reshape_ios17))


@prepares("transpose")
def prepare_transpose(spec):
    probe = _probe(spec)
    if probe is None or set(spec.dynamic) != {"x"}:
        return None
    try:
        transpose(probe, **spec.consts)
    except (ValueError, TypeError):
        return None
    perm = tuple(norm_axis(p, probe.ndim, "perm") for p in as_ints(spec.consts["perm"], "perm"))
    return lambda x: x.transpose(perm)


@prepares("slice_by_index")
def prepare_slice_by_index(spec):
    probe = _probe(spec)
    if probe is None or set(spec.dynamic) != {"x"}:
        return None
    params = {k: spec.consts.get(k) for k in ("begin", "end", "stride", "begin_mask", "end_mask", "squeeze_mask")}
    if params["begin"] is None or params["end"] is None:
        return None
    try:
        index = _slice_index(probe, **params)
    except (ValueError, TypeError):
        return None
    return lambda x: x[index]
