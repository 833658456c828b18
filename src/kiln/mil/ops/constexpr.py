"""``const`` and the compile-time ``constexpr_*`` ops (coremltools defs iOS15/control_flow.py,
iOS16/constexpr_ops.py, iOS18/compression.py).

They are evaluated once, when the execution plan is built. iOS16 forms carry their operands as
attributes; iOS18 forms take them as inputs (inline values or other constexpr outputs). Outputs
declared fp16 are rounded to fp16 once (they are fp16 tensors in Core ML) in every precision mode.
"""

from __future__ import annotations

import numpy as np

from .. import dtypes
from ..registry import register
from ._util import as_int, as_ints, as_str, norm_axis


@register("const", constexpr=True, narrow=("val",))
def const(val):
    """MIL ``const`` (iOS15+): the value of its ``val`` attribute (an fp16 weight stays float16:
    the constant pool keeps it as read)."""
    return val


@register("_const_symbolic", constexpr=True, narrow=("val",))
def const_symbolic(val=None):
    """MIL ``_const_symbolic`` (iOS15+, internal to coremltools): a ``const``. coremltools 9.0 writes
    it with no value at all (its serializer handles only ``const``), which no runtime can execute."""
    if val is None:
        raise ValueError("no 'val' attribute: the op carries no value (coremltools writes _const_symbolic "
                         "without one; a const needs its 'val')")
    return val


def _along_axis(param, data, axis, name):
    """A scalar or vector parameter shaped to broadcast along ``axis`` of ``data``."""
    param = np.asarray(param, dtype=np.float32)
    if param.ndim == 0 or param.size == 1:
        return param.reshape(())
    if param.ndim != 1 or param.shape[0] != data.shape[axis]:
        raise ValueError(
            f"{name} of shape {list(param.shape)} does not match dimension {axis} of {list(data.shape)}"
        )
    shape = [1] * data.ndim
    shape[axis] = -1
    return param.reshape(shape)


@register("constexpr_affine_dequantize", since="iOS16", constexpr=True)
def constexpr_affine_dequantize(quantized_data, zero_point, scale, axis):
    """MIL ``constexpr_affine_dequantize`` (iOS16+): ``scale * (quantized_data - zero_point)``;
    ``scale``/``zero_point`` are scalars or vectors along ``axis``."""
    data = np.asarray(quantized_data)
    if data.ndim == 0:
        raise ValueError("quantized_data must have rank >= 1")
    axis = norm_axis(as_int(axis, "axis"), data.ndim)
    zp = _along_axis(zero_point, data, axis, "zero_point")
    sc = _along_axis(scale, data, axis, "scale")
    return (data.astype(np.float32) - zp) * sc


@register("constexpr_cast", since="iOS16", constexpr=True)
def constexpr_cast(source_val, output_dtype):
    """MIL ``constexpr_cast`` (iOS16 attributes, iOS18 inputs): fp16 constant widened to ``output_dtype``."""
    name = as_str(output_dtype, "output_dtype")
    target = dtypes.numpy_for_dtype_string(name)
    if target is None or name not in ("fp32", "fp16"):
        raise ValueError(f"constexpr_cast to {name!r} is not supported (fp32)")
    return np.asarray(source_val).astype(target)


@register("constexpr_lut_to_dense", since="iOS16", constexpr=True)
def constexpr_lut_to_dense(indices, lut, shape):
    """MIL ``constexpr_lut_to_dense`` (iOS16/17): ``lut[index]`` for n-bit indices packed LSB first
    in the uint8 stream ``indices``; ``lut`` has 2^n entries (n in 1, 2, 4, 6, 8)."""
    lut = np.asarray(lut).reshape(-1)
    nbits = int(np.log2(lut.size)) if lut.size else 0
    if lut.size < 2 or 2**nbits != lut.size or nbits > 8:
        raise ValueError(f"lut must have 2^n entries (n <= 8), got {lut.size}")
    dims = as_ints(shape, "shape")
    count = int(np.prod(dims, dtype=np.int64))
    stream = np.asarray(indices, dtype=np.uint8).reshape(-1)
    if stream.size != (count * nbits + 7) // 8:
        raise ValueError(f"{stream.size} index bytes for {count} {nbits}-bit indices")
    keys = dtypes.unpack_bits(stream, nbits, count, signed=False)
    return lut[keys.astype(np.intp)].reshape(dims)


@register("constexpr_sparse_to_dense", since="iOS16", constexpr=True)
def constexpr_sparse_to_dense(nonzero_data, mask, shape):
    """MIL ``constexpr_sparse_to_dense`` (iOS16/17): bitmask ``mask`` (uint8 bytes, LSB first) marks
    nonzero elements, filled in row-major order from ``nonzero_data``."""
    dims = as_ints(shape, "shape")
    count = int(np.prod(dims, dtype=np.int64))
    stream = np.asarray(mask, dtype=np.uint8).reshape(-1)
    if stream.size != (count + 7) // 8:
        raise ValueError(f"{stream.size} mask bytes for {count} elements")
    bits = np.unpackbits(stream, bitorder="little")[:count].astype(bool)
    return _fill_mask(np.asarray(nonzero_data), bits).reshape(dims)


def _fill_mask(nonzero_data, mask_bool):
    data = nonzero_data.reshape(-1)
    if int(mask_bool.sum()) != data.size:
        raise ValueError(f"mask has {int(mask_bool.sum())} set bits for {data.size} nonzero values")
    out = np.zeros(mask_bool.shape, dtype=data.dtype)
    out[mask_bool] = data
    return out


# -- iOS18 ----------------------------------------------------------------------------------------


def _blockwise(data, scale, offset):
    data = np.asarray(data)
    scale = np.asarray(scale, dtype=np.float32)
    if data.ndim < 1 or scale.ndim != data.ndim:
        raise ValueError(f"data rank {data.ndim} and scale rank {scale.ndim} must match (>= 1)")
    if offset is not None and np.shape(offset) != scale.shape:
        raise ValueError(f"offset shape {list(np.shape(offset))} differs from scale {list(scale.shape)}")
    result = data.astype(np.float32)
    for axis, (d, s) in enumerate(zip(data.shape, scale.shape)):
        if s == 0 or d % s:
            raise ValueError(f"dimension {axis}: {d} is not a multiple of {s} scales")
    blocks = [d // s for d, s in zip(data.shape, scale.shape)]

    def expand(p):
        for axis, block in enumerate(blocks):
            if block > 1:
                p = np.repeat(p, block, axis)
        return p

    if offset is not None:
        result = result - expand(np.asarray(offset, dtype=np.float32))
    return result * expand(scale)


@register("constexpr_blockwise_shift_scale", since="iOS18", constexpr=True)
def constexpr_blockwise_shift_scale(data, scale, offset=None):
    """MIL ``constexpr_blockwise_shift_scale`` (iOS18+): ``scale * (data - offset)`` with per-axis
    blocks of ``data.shape[i] // scale.shape[i]`` elements sharing one scale/offset."""
    return _blockwise(data, scale, offset)


def _lut_ios18(indices, lut, vector_axis):
    indices = np.asarray(indices)
    lut = np.asarray(lut)
    k = indices.ndim
    if k < 1 or lut.ndim != k + 2:
        raise ValueError(f"lut must have rank indices.rank + 2 = {k + 2}, got {lut.ndim}")
    groups = lut.shape[:k]
    palettes, vector = lut.shape[k], lut.shape[k + 1]
    for axis, (d, g) in enumerate(zip(indices.shape, groups)):
        if g == 0 or d % g:
            raise ValueError(f"dimension {axis}: {d} is not a multiple of {g} lookup tables")
    if indices.size and (indices.min() < 0 or indices.max() >= palettes):
        raise ValueError(f"index out of range for {palettes} palette entries")
    grid = np.ix_(*[np.arange(d) // (d // g) for d, g in zip(indices.shape, groups)])
    values = lut[grid + (indices.astype(np.intp),)]  # indices.shape + (vector,)
    if vector == 1:
        return values[..., 0]
    if vector_axis is None:
        raise ValueError("vector_axis is required for vector palettization")
    axis = norm_axis(as_int(vector_axis, "vector_axis"), k)
    values = np.moveaxis(values, -1, axis + 1)
    shape = list(indices.shape)
    shape[axis] *= vector
    return values.reshape(shape)


@register("constexpr_lut_to_dense", since="iOS18", constexpr=True)
def constexpr_lut_to_dense_ios18(indices, lut, vector_axis=None):
    """MIL ``constexpr_lut_to_dense`` (iOS18+): typed sub-byte ``indices``; ``lut`` of shape
    ``[*groups, 2^n, vector_size]`` with one table per block of indices; vector entries fill
    ``vector_axis``."""
    return _lut_ios18(indices, lut, vector_axis)


@register("constexpr_sparse_to_dense", since="iOS18", constexpr=True)
def constexpr_sparse_to_dense_ios18(nonzero_data, mask):
    """MIL ``constexpr_sparse_to_dense`` (iOS18+): ``mask`` is a uint1 tensor of the output shape."""
    return _fill_mask(np.asarray(nonzero_data), np.asarray(mask) != 0)


@register("constexpr_lut_to_sparse", since="iOS18", constexpr=True)
def constexpr_lut_to_sparse(indices_mask, indices_nonzero_data, lut, vector_axis=None):
    """MIL ``constexpr_lut_to_sparse`` (iOS18+): palettize only the nonzero entries; returns the
    (vector-expanded) mask and the looked-up nonzero values."""
    mask = np.asarray(indices_mask) != 0
    indices = _fill_mask(np.asarray(indices_nonzero_data), mask)
    dense = _lut_ios18(indices, lut, vector_axis)
    vector = np.asarray(lut).shape[-1]
    out_mask = mask
    if vector > 1:
        out_mask = np.repeat(mask, vector, axis=norm_axis(as_int(vector_axis, "vector_axis"), mask.ndim))
    return out_mask.astype(np.uint8), dense[out_mask].reshape(-1)


@register("constexpr_sparse_blockwise_shift_scale", since="iOS18", constexpr=True)
def constexpr_sparse_blockwise_shift_scale(data_mask, nonzero_data, scale, offset=None):
    """MIL ``constexpr_sparse_blockwise_shift_scale`` (iOS18+): dequantize only the nonzero entries;
    returns the mask and the dequantized nonzero values."""
    mask = np.asarray(data_mask) != 0
    dense = _blockwise(_fill_mask(np.asarray(nonzero_data), mask), scale, offset)
    return mask.astype(np.uint8), dense[mask].reshape(-1)
