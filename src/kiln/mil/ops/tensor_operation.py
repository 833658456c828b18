"""Tensor operations (coremltools defs iOS15/tensor_operation.py, iOS16/17 variants)."""

from __future__ import annotations

import numpy as np

from ..registry import prepares, register
from ._util import as_bool, as_float, as_int, as_ints, as_str, norm_axis


@register("identity", exact=True)
def identity(x):
    """MIL ``identity`` (iOS15+): ``x`` unchanged."""
    return x


@register("shape")
def shape(x):
    """MIL ``shape`` (iOS15+): the shape of ``x`` as an int32 vector."""
    return np.array(np.shape(x), dtype=np.int32)


@register("band_part", exact=True)
def band_part(x, lower=-1, upper=-1):
    """MIL ``band_part`` (iOS15+): zero everything outside the band of the innermost matrices.

    Keeps ``(lower < 0 or m - n <= lower) and (upper < 0 or n - m <= upper)``."""
    if x.ndim < 2:
        raise ValueError(f"band_part needs rank >= 2, got {x.ndim}")
    lower, upper = as_int(lower, "lower"), as_int(upper, "upper")
    m = np.arange(x.shape[-2])[:, None]
    n = np.arange(x.shape[-1])[None, :]
    keep = ((lower < 0) | (m - n <= lower)) & ((upper < 0) | (n - m <= upper))
    return np.where(keep, x, np.zeros((), x.dtype))


@register("cumsum")
def cumsum(x, axis=0, exclusive=False, reverse=False):
    """MIL ``cumsum`` (iOS15+): cumulative sum along ``axis``, optionally exclusive and/or reversed."""
    axis = norm_axis(as_int(axis, "axis"), x.ndim)
    y = np.flip(x, axis) if as_bool(reverse) else x
    out = np.cumsum(y, axis=axis, dtype=x.dtype)
    if as_bool(exclusive):
        out = out - y
    return np.flip(out, axis) if as_bool(reverse) else out


@register("fill")
def fill(shape, value=0.0):
    """MIL ``fill`` (iOS15+): a tensor of ``shape`` filled with ``value``."""
    dims = as_ints(shape, "shape")
    if any(d < 0 for d in dims):
        raise ValueError(f"negative dimension in shape {dims}")
    value = np.asarray(value)
    return np.full(dims, value, dtype=value.dtype)


@register("fill_like", since="iOS16")
def fill_like(ref_tensor, value=0.0):
    """MIL ``fill_like`` (iOS16+): a tensor shaped like ``ref_tensor`` filled with ``value``."""
    value = np.asarray(value)
    return np.full(np.shape(ref_tensor), value, dtype=value.dtype)


@register("flatten2d", exact=True)
def flatten2d(x, axis=1):
    """MIL ``flatten2d`` (iOS15+): reshape to ``[prod(x.shape[:axis]), prod(x.shape[axis:])]``."""
    axis = as_int(axis, "axis")
    if not -x.ndim <= axis <= x.ndim:
        raise ValueError(f"axis {axis} out of range for rank {x.ndim}")
    axis = axis + x.ndim if axis < 0 else axis
    prior = int(np.prod(x.shape[:axis], dtype=np.int64))
    return x.reshape(prior, -1) if x.size else x.reshape(prior, int(np.prod(x.shape[axis:])))


@register("concat", tuple_params=("values",), exact=True)
def concat(values, axis, interleave=False):
    """MIL ``concat`` (iOS15+): join ``values`` along ``axis``; ``interleave`` alternates slices."""
    if not values:
        raise ValueError("concat needs at least one value")
    rank = np.ndim(values[0])
    axis = norm_axis(as_int(axis, "axis"), rank)
    if as_bool(interleave, "interleave"):
        if any(np.shape(v) != np.shape(values[0]) for v in values):
            raise ValueError("interleaved concat needs equal shapes")
        stacked = np.stack(values, axis=axis + 1)
        shape = list(np.shape(values[0]))
        shape[axis] *= len(values)
        return stacked.reshape(shape)
    return np.concatenate(values, axis=axis)


@register("stack", tuple_params=("values",), exact=True)
def stack(values, axis):
    """MIL ``stack`` (iOS15+): stack equal-shaped ``values`` along a new ``axis``."""
    if not values:
        raise ValueError("stack needs at least one value")
    rank = np.ndim(values[0]) + 1
    return np.stack(values, axis=norm_axis(as_int(axis, "axis"), rank))


@register("split", exact=True)
def split(x, axis, num_splits=None, split_sizes=None):
    """MIL ``split`` (iOS15+): split ``x`` along ``axis`` into ``num_splits`` equal parts or
    ``split_sizes``."""
    axis = norm_axis(as_int(axis, "axis"), x.ndim)
    length = x.shape[axis]
    if split_sizes is not None:
        sizes = as_ints(split_sizes, "split_sizes")
        if sum(sizes) != length or any(s < 0 for s in sizes):
            raise ValueError(f"split_sizes {sizes} do not add up to {length}")
    elif num_splits is not None:
        n = as_int(num_splits, "num_splits")
        if n <= 0 or length % n:
            raise ValueError(f"dimension {length} cannot be split evenly into {n}")
        sizes = [length // n] * n
    else:
        raise ValueError("split needs num_splits or split_sizes")
    bounds = np.cumsum(sizes)[:-1]
    return tuple(np.split(x, bounds, axis=axis))


@register("tile", exact=True)
def tile(x, reps):
    """MIL ``tile`` (iOS15+): repeat ``x`` ``reps[i]`` times along dimension ``i``."""
    reps = as_ints(reps, "reps")
    if len(reps) != x.ndim or any(r < 0 for r in reps):
        raise ValueError(f"reps {reps} invalid for rank {x.ndim}")
    return np.tile(x, reps)


@register("range_1d")
def range_1d(start, end, step):
    """MIL ``range_1d`` (iOS15+): ``arange(start, end, step)``."""
    dtype = np.result_type(start, end, step)
    if as_float(step, "step") == 0:
        raise ValueError("step must be nonzero")
    count = int(np.ceil((as_float(end) - as_float(start)) / as_float(step)))
    if count > 1 << 28:
        raise ValueError(f"range of {count} elements is too large")
    return np.arange(start.item(), end.item(), step.item(), dtype=dtype)


@register("one_hot")
def one_hot(indices, one_hot_vector_size, axis=-1, on_value=1, off_value=0):
    """MIL ``one_hot`` (iOS15+): ``on_value`` where ``indices`` points, ``off_value`` elsewhere."""
    depth = as_int(one_hot_vector_size, "one_hot_vector_size")
    if depth < 0:
        raise ValueError(f"negative one_hot_vector_size {depth}")
    axis = as_int(axis, "axis")
    rank = indices.ndim + 1
    axis = norm_axis(axis, rank)
    on = np.asarray(on_value)
    off = np.asarray(off_value, dtype=on.dtype)
    hot = np.expand_dims(indices, -1) == np.arange(depth)
    out = np.where(hot, on, off)
    return np.moveaxis(out, -1, axis)


@register("pad", exact=True)
def pad(x, pad, mode="constant", constant_val=0.0):
    """MIL ``pad`` (iOS15+): pad the last ``len(pad) / 2`` dims; ``constant``, ``reflect``
    (at most ``D - 1`` per side) or ``replicate``."""
    amounts = as_ints(pad, "pad")
    if len(amounts) % 2 or len(amounts) // 2 > x.ndim:
        raise ValueError(f"pad of length {len(amounts)} invalid for rank {x.ndim}")
    if any(a < 0 for a in amounts):
        raise ValueError(f"negative padding {amounts}")
    n = len(amounts) // 2
    widths = [(0, 0)] * (x.ndim - n) + [(amounts[2 * i], amounts[2 * i + 1]) for i in range(n)]
    mode = as_str(mode, "mode")
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=np.asarray(constant_val).item())
    if mode == "reflect":
        for (before, after), size in zip(widths, x.shape):
            if before > size - 1 or after > size - 1:
                raise ValueError(f"reflect padding {before, after} exceeds dimension {size} - 1")
        return np.pad(x, widths, mode="reflect")
    if mode == "replicate":
        for (before, after), size in zip(widths, x.shape):
            if (before or after) and size == 0:
                raise ValueError("cannot replicate-pad an empty dimension")
        return np.pad(x, widths, mode="edge")
    raise ValueError(f"unknown pad mode {mode!r}")


def _sort_order(x, axis, ascending):
    if ascending:
        return np.argsort(x, axis=axis, kind="stable")
    keys = -x.astype(np.float64) if x.dtype.kind in "iub" else -x
    return np.argsort(keys, axis=axis, kind="stable")


@register("argsort")
def argsort(x, axis=-1, ascending=False):
    """MIL ``argsort`` (iOS15+): indices sorting ``x`` along ``axis`` (descending by default;
    ties keep their original order)."""
    axis = norm_axis(as_int(axis, "axis"), x.ndim)
    return _sort_order(x, axis, as_bool(ascending)).astype(np.int32)


def _topk(x, k, axis, ascending, sort=True, return_indices=True, output_indices_dtype="int32"):
    axis = norm_axis(as_int(axis, "axis"), x.ndim)
    k = as_int(k, "k")
    if k == -1:
        k = x.shape[axis]
    if not 0 <= k <= x.shape[axis]:
        raise ValueError(f"k={k} out of range for dimension {x.shape[axis]}")
    order = np.take(_sort_order(x, axis, as_bool(ascending)), np.arange(k), axis=axis)
    values = np.take_along_axis(x, order, axis=axis)
    if not as_bool(return_indices):
        return values
    dtype = as_str(output_indices_dtype, "output_indices_dtype")
    if dtype not in ("int32", "uint16"):
        raise ValueError(f"output_indices_dtype must be int32 or uint16, got {dtype!r}")
    return values, order.astype(np.int32 if dtype == "int32" else np.uint16)


@register("topk")
def topk(x, k=1, axis=-1, ascending=False):
    """MIL ``topk`` (iOS15): the ``k`` largest (or smallest) values along ``axis`` and their indices."""
    return _topk(x, k, axis, ascending)


@register("topk", since="iOS16")
def topk_ios16(x, k=1, axis=-1, ascending=False, sort=True, return_indices=True):
    """MIL ``topk`` (iOS16): adds ``sort`` and ``return_indices`` (values only when False)."""
    return _topk(x, k, axis, ascending, sort, return_indices)


@register("topk", since="iOS17")
def topk_ios17(x, k=1, axis=-1, ascending=False, sort=True, return_indices=True, output_indices_dtype="int32"):
    """MIL ``topk`` (iOS17+): ``k = -1`` selects all; ``output_indices_dtype`` int32 or uint16."""
    return _topk(x, k, axis, ascending, sort, return_indices, output_indices_dtype)


@register("non_zero")
def non_zero(x):
    """MIL ``non_zero`` (iOS15+): ``[N, rank]`` int32 indices of the nonzero elements."""
    return np.argwhere(x).astype(np.int32)


def _iou(boxes):
    """IoU matrix of [B, 4] center-size boxes (x, y, w, h)."""
    cx, cy, w, h = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    x1, x2, y1, y2 = cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2
    iw = np.maximum(0, np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None]))
    ih = np.maximum(0, np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None]))
    inter = iw * ih
    area = w * h
    union = area[:, None] + area[None] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _greedy_nms(boxes, scores, iou_threshold, score_threshold, max_boxes):
    order = [i for i in np.argsort(-scores, kind="stable") if scores[i] > score_threshold]
    iou = _iou(boxes)
    kept: list[int] = []
    for i in order:
        if len(kept) >= max_boxes:
            break
        if all(iou[i, j] <= iou_threshold for j in kept):
            kept.append(int(i))
    return kept


def _nms(boxes, scores, iou_threshold, score_threshold, max_boxes, per_class_suppression):
    n, count, _ = boxes.shape
    k = scores.shape[2]
    iou_t, score_t = as_float(iou_threshold), as_float(score_threshold)
    max_boxes = as_int(max_boxes, "max_boxes")
    out_boxes = np.zeros((n, max_boxes, 4), boxes.dtype)
    out_scores = np.zeros((n, max_boxes, k), scores.dtype)
    out_ids = -np.ones((n, max_boxes), np.int32)
    out_count = np.zeros((n,), np.int32)
    for b in range(n):
        best = scores[b].max(axis=-1)
        if as_bool(per_class_suppression):
            classes = scores[b].argmax(axis=-1)
            kept = []
            for c in np.unique(classes):
                members = np.flatnonzero(classes == c)
                chosen = _greedy_nms(boxes[b][members], best[members], iou_t, score_t, max_boxes)
                kept += [int(members[i]) for i in chosen]
            kept = sorted(kept, key=lambda i: (-best[i], i))[:max_boxes]
        else:
            kept = _greedy_nms(boxes[b], best, iou_t, score_t, max_boxes)
        if not kept and count:
            kept = [int(np.argmax(best))]
        kept = kept[:max_boxes]
        m = len(kept)
        out_boxes[b, :m] = boxes[b, kept]
        out_scores[b, :m] = scores[b, kept]
        out_ids[b, :m] = kept
        out_count[b] = m
    return out_boxes, out_scores, out_ids, out_count


@register("non_maximum_suppression")
def non_maximum_suppression(boxes, scores, iou_threshold, score_threshold, max_boxes,
                            per_class_suppression=False):
    """MIL ``non_maximum_suppression`` (iOS15/16): greedy NMS on ``[n, B, 4]`` center-size boxes.

    Outputs boxes, scores, indices (-1 padded) and the count per batch."""
    if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.ndim != 3 or scores.shape[:2] != boxes.shape[:2]:
        raise ValueError(f"boxes {list(boxes.shape)} / scores {list(scores.shape)} invalid")
    return _nms(boxes, scores, iou_threshold, score_threshold, max_boxes, per_class_suppression)


@register("non_maximum_suppression", since="iOS17")
def non_maximum_suppression_ios17(boxes, scores, iou_threshold, max_boxes, per_class_suppression=False):
    """MIL ``non_maximum_suppression`` (iOS17+): boxes ``[n, 4, B]``, scores ``[n, K, B]``, no score
    threshold, three outputs (boxes ``[n, 4, max]``, scores ``[n, K, max]``, indices)."""
    if boxes.ndim != 3 or boxes.shape[1] != 4 or scores.ndim != 3 or scores.shape[::2] != boxes.shape[::2]:
        raise ValueError(f"boxes {list(boxes.shape)} / scores {list(scores.shape)} invalid")
    out_boxes, out_scores, out_ids, _ = _nms(
        np.swapaxes(boxes, 1, 2), np.swapaxes(scores, 1, 2), iou_threshold, -np.inf, max_boxes,
        per_class_suppression,
    )
    return np.swapaxes(out_boxes, 1, 2), np.swapaxes(out_scores, 1, 2), out_ids


# -- prepared kernels (see kiln.mil.registry) ---------------------------------------------------


@prepares("pad")
def prepare_pad(spec):
    """Padding of a static shape: ``constant`` fills a new array and copies ``x`` into its
    interior; ``reflect``/``replicate`` gather along each padded axis by precomputed indices."""
    shape = spec.static_shape("x")
    ttype = spec.input_types.get("x")
    if shape is None or ttype is None or set(spec.dynamic) != {"x"} or "pad" not in spec.consts:
        return None
    try:
        mode = as_str(spec.consts.get("mode", "constant"), "mode")
        probe = np.broadcast_to(np.zeros((), ttype.dtype.storage), shape)
        out_shape = pad(probe, **spec.consts).shape  # validates amounts and mode limits
        amounts = as_ints(spec.consts["pad"], "pad")
        fill = np.asarray(spec.consts.get("constant_val", 0.0)).item()
    except (ValueError, TypeError):
        return None
    n = len(amounts) // 2
    widths = [(0, 0)] * (len(shape) - n) + [(amounts[2 * i], amounts[2 * i + 1]) for i in range(n)]
    dtype = ttype.dtype.storage
    if mode == "constant":
        interior = tuple(slice(b, b + size) for (b, _), size in zip(widths, shape))

        def kernel(x):
            out = np.full(out_shape, fill, dtype)
            out[interior] = x
            return out

        kernel.fresh = True
        return kernel
    numpy_mode = {"reflect": "reflect", "replicate": "edge"}[mode]
    gathers = tuple((axis, np.pad(np.arange(size), width, mode=numpy_mode))
                    for axis, (width, size) in enumerate(zip(widths, shape)) if width != (0, 0))

    def kernel(x):
        for axis, index in gathers:
            x = np.take(x, index, axis=axis)
        return x

    return kernel


@prepares("fill_like", since="iOS16")
def prepare_fill_like(spec):
    """The reference's shape is static and the value constant: the result is computed once and
    returned, read-only, on every call (attention masks fill [heads, T, T] per layer otherwise)."""
    shape = spec.static_shape("ref_tensor")
    if shape is None or spec.dynamic != ("ref_tensor",):
        return None
    value = np.asarray(spec.consts.get("value", 0.0))
    out_type = spec.output_types[0] if spec.output_types else None
    dtype = out_type.dtype.storage if out_type is not None else value.dtype  # fp16 is held as float32
    filled = np.full(shape, value, dtype=dtype)
    filled.setflags(write=False)
    return lambda ref_tensor: filled


@prepares("tile")
def prepare_tile(spec):
    """A tile that only repeats size-1 axes is a broadcast: the kernel returns a read-only
    broadcasting view (no copy; a consumer like ``mul`` broadcasts it as the tiled array). The
    masks of NeMo's conv subsampling are tiled this way to 49 MB per 15 s, every call."""
    shape = spec.static_shape("x")
    if shape is None or spec.dynamic != ("x",) or "reps" not in spec.consts:
        return None
    try:
        reps = as_ints(spec.consts["reps"], "reps")
    except (ValueError, TypeError):
        return None
    if len(reps) != len(shape) or any(r < 0 for r in reps):
        return None
    if any(r != 1 and size != 1 for r, size in zip(reps, shape)):
        return None  # a real repetition: the plain kernel
    out_shape = tuple(size * r for size, r in zip(shape, reps))
    return lambda x: np.broadcast_to(x, out_shape)


@prepares("split")
def prepare_split(spec):
    """Split points fixed: the parts are basic-slicing views of ``x``."""
    shape = spec.static_shape("x")
    if shape is None or set(spec.dynamic) != {"x"}:
        return None
    probe = np.broadcast_to(np.zeros((), np.float32), shape)
    try:
        parts = split(probe, **spec.consts)
        axis = norm_axis(as_int(spec.consts["axis"], "axis"), len(shape))
    except (ValueError, TypeError, KeyError):
        return None
    indices, start = [], 0
    for part in parts:
        size = part.shape[axis]
        indices.append((slice(None),) * axis + (slice(start, start + size),))
        start += size
    indices = tuple(indices)
    return lambda x: tuple(x[index] for index in indices)
