"""Convolutions (coremltools defs iOS15/conv.py; iOS17 relaxes weight/bias dtypes and lets
``conv_transpose`` take a non-constant weight). Computed with torch's functional kernels."""

from __future__ import annotations

import weakref

import numpy as np

from ..registry import prepares, register
from ._util import (TORCH_PRODUCT_MIN, as_int, as_ints, as_str, float32_source, product_size, spatial_padding,
                    to_torch, torch, torch_float32_source)


def _spatial_params(x, kernel_sizes, strides, dilations, name):
    n = x.ndim - 2
    if not 1 <= n <= 3:
        raise ValueError(f"{name} needs x of rank 3..5, got {x.ndim}")
    strides = as_ints(strides, "strides") if strides is not None else [1] * n
    dilations = as_ints(dilations, "dilations") if dilations is not None else [1] * n
    if len(strides) != n or len(dilations) != n or len(kernel_sizes) != n:
        raise ValueError(f"{name}: strides/dilations/kernel must have {n} entries")
    if any(s < 1 for s in strides) or any(d < 1 for d in dilations):
        raise ValueError(f"{name}: strides and dilations must be positive")
    return n, strides, dilations


_CONV = {1: "conv1d", 2: "conv2d", 3: "conv3d"}
_CONV_T = {1: "conv_transpose1d", 2: "conv_transpose2d", 3: "conv_transpose3d"}


def _param_key(value):
    if value is None or isinstance(value, str):
        return value
    array = np.asarray(value)
    return (array.dtype.str, array.shape, array.tobytes())


class _WeightCache:
    """Per-weight prepared data (im2col matrices, geometry), dropped when the weight array dies.

    Keyed by ``id(weight)`` and verified with a weak reference, so a recycled id never hits."""

    def __init__(self):
        self._entries: dict[int, tuple] = {}

    def get(self, weight) -> dict:
        entry = self._entries.get(id(weight))
        if entry is None or entry[0]() is not weight:
            if len(self._entries) > 4096:
                self._entries = {k: e for k, e in self._entries.items() if e[0]() is not None}
            entry = (weakref.ref(weight), {})
            self._entries[id(weight)] = entry
        return entry[1]


_CONV_CACHE = _WeightCache()


def _conv_geometry(x, weight, strides, pad_type, pad, dilations, groups, *, weight_matrix=True):
    """Spatial geometry of a conv, whether it runs as im2col, and (``weight_matrix``) the im2col
    weight matrix (prepare_conv makes its own: it passes a broadcast probe for ``weight``)."""
    kernel = list(weight.shape[2:])
    n, strides, dilations = _spatial_params(x, kernel, strides, dilations, "conv")
    groups = as_int(groups, "groups")
    if weight.ndim != x.ndim or groups < 1 or x.shape[1] != weight.shape[1] * groups or weight.shape[0] % groups:
        raise ValueError(
            f"x {list(x.shape)}, weight {list(weight.shape)} and groups={groups} do not match"
        )
    padding = spatial_padding(as_str(pad_type, "pad_type"), pad, x.shape[2:], kernel, strides, dilations)
    out_sizes = [
        (size + before + after - (k - 1) * d - 1) // s + 1
        for size, (before, after), k, d, s in zip(x.shape[2:], padding, kernel, dilations, strides)
    ]
    if any(o < 1 for o in out_sizes):
        raise ValueError(f"kernel {kernel} (dilations {dilations}) larger than padded input")
    window_elems = x.shape[0] * x.shape[1] * int(np.prod(out_sizes)) * int(np.prod(kernel))
    use_im2col = window_elems <= _IM2COL_LIMIT
    wmat = None
    if use_im2col and weight_matrix:
        cg, cog = x.shape[1] // groups, weight.shape[0] // groups
        wmat = np.ascontiguousarray(
            weight.astype(x.dtype).reshape(groups, cog, cg * int(np.prod(kernel))).transpose(0, 2, 1)
        )
    return n, strides, dilations, groups, padding, out_sizes, use_im2col, wmat


@register("conv")
def conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    """MIL ``conv`` (iOS15+, iOS17): 1-3 D convolution, weight ``[C_out, C_in/groups, *K]``.

    ``pad_type``: ``valid``, ``custom`` (``pad`` = before/after per spatial dim), ``same`` and
    ``same_lower`` (output ``ceil(d_in / stride)``, the odd extra padding after / before).
    Geometry and the im2col weight matrix are computed once per weight and input shape."""
    cache = _CONV_CACHE.get(weight)
    key = (x.shape, x.dtype.str, _param_key(strides), _param_key(pad_type), _param_key(pad),
           _param_key(dilations), _param_key(groups))
    geometry = cache.get(key)
    if geometry is None:
        geometry = cache[key] = _conv_geometry(x, weight, strides, pad_type, pad, dilations, groups)
    n, strides, dilations, groups, padding, out_sizes, use_im2col, wmat = geometry
    if use_im2col:
        return _conv_im2col(x, wmat, weight.shape, bias, strides, padding, dilations, groups, out_sizes)
    t = torch()
    xt = to_torch(x)
    if any(p != (0, 0) for p in padding):
        flat = []
        for before, after in reversed(padding):
            flat += [before, after]
        xt = t.nn.functional.pad(xt, flat)
    bt = None if bias is None else to_torch(bias.astype(x.dtype, copy=False))
    wt = to_torch(weight.astype(x.dtype, copy=False))
    with t.no_grad():
        y = getattr(t.nn.functional, _CONV[n])(xt, wt, bt, strides, 0, dilations, groups)
    return y.numpy()


# Small convolutions run as numpy im2col + matmul (torch's per-call overhead dominates there).
_IM2COL_LIMIT = 1 << 20


def _pad_zeros(x, padding):
    shape = list(x.shape[:2]) + [size + b + a for size, (b, a) in zip(x.shape[2:], padding)]
    out = np.zeros(shape, x.dtype)
    out[(slice(None), slice(None)) + tuple(slice(b, b + size) for size, (b, _) in zip(x.shape[2:], padding))] = x
    return out


def _conv_im2col(x, wmat, weight_shape, bias, strides, padding, dilations, groups, out_sizes):
    n_spatial = x.ndim - 2
    if any(p != (0, 0) for p in padding):
        x = _pad_zeros(x, padding)
    kernel = weight_shape[2:]
    batch, channels = x.shape[:2]
    out_flat = int(np.prod(out_sizes))
    k_flat = int(np.prod(kernel))
    cg = channels // groups
    if n_spatial == 1:
        # direct strided view: [N, C, out, K]
        sn, sc, sl = x.strides
        win = np.lib.stride_tricks.as_strided(
            x, (batch, channels, out_sizes[0], kernel[0]), (sn, sc, sl * strides[0], sl * dilations[0])
        )
    else:
        dilated = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
        axes = tuple(range(2, 2 + n_spatial))
        win = np.lib.stride_tricks.sliding_window_view(x, dilated, axis=axes)
        index = (slice(None), slice(None))
        index += tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(out_sizes, strides))
        index += tuple(slice(None, None, d) for d in dilations)
        win = win[index]  # [N, C, *out, *K]
    if groups == 1:
        cols = win.reshape(batch, channels, out_flat, k_flat).transpose(0, 2, 1, 3).reshape(batch, out_flat, cg * k_flat)
        y = np.matmul(cols, wmat[0])  # [N, out, C_out]
        y = y.transpose(0, 2, 1).reshape((batch, wmat.shape[2]) + tuple(out_sizes))
    else:
        cols = win.reshape(batch, groups, cg, out_flat, k_flat).transpose(0, 1, 3, 2, 4)
        cols = cols.reshape(batch, groups, out_flat, cg * k_flat)
        y = np.matmul(cols, wmat)  # [N, G, out, cog]
        y = y.transpose(0, 1, 3, 2).reshape((batch, groups * wmat.shape[2]) + tuple(out_sizes))
    if bias is not None:
        y = y + bias.astype(x.dtype, copy=False).reshape((1, -1) + (1,) * n_spatial)
    return y


@register("conv_quantized")
def conv_quantized(x, weight, quantization_type, quant_scale, quant_bias, nbits=8, bias=None,
                   strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    """MIL ``conv_quantized`` (iOS15+, experimental): ``conv`` with weight dequantized first.

    ``linear``: ``W = W_q * quant_scale + quant_bias``; ``lut``: ``W = quant_scale[W_q]``."""
    kind = as_str(quantization_type, "quantization_type")
    q = np.asarray(weight)
    if kind == "linear":
        w = q.astype(np.float32) * np.asarray(quant_scale, np.float32) + np.asarray(quant_bias, np.float32)
    elif kind == "lut":
        lut = np.asarray(quant_scale, np.float32).reshape(-1)
        w = lut[q.astype(np.int64)]
    else:
        raise ValueError(f"unknown quantization_type {kind!r}")
    return conv(x, w.astype(x.dtype), bias, strides, pad_type, pad, dilations, groups)


@register("conv_transpose")
def conv_transpose(x, weight, bias=None, pad=None, output_shape=None, pad_type="valid",
                   strides=None, dilations=None, groups=1):
    """MIL ``conv_transpose`` (iOS15+, iOS17): transposed convolution, weight ``[C_in, C_out/groups, *K]``.

    The full (unpadded) transposed convolution is cropped by ``pad`` (custom) or centred to
    ``D_in * stride`` (same); ``output_shape`` fixes the spatial size (zeros plus bias past the
    end of the full result)."""
    kernel = list(weight.shape[2:])
    n, strides, dilations = _spatial_params(x, kernel, strides, dilations, "conv_transpose")
    groups = as_int(groups, "groups")
    if weight.ndim != x.ndim or groups < 1 or weight.shape[0] != x.shape[1] or x.shape[1] % groups:
        raise ValueError(f"x {list(x.shape)}, weight {list(weight.shape)} and groups={groups} do not match")
    t = torch()
    with t.no_grad():
        full = getattr(t.nn.functional, _CONV_T[n])(
            to_torch(x), to_torch(weight.astype(x.dtype, copy=False)), None, strides, 0, 0, groups, dilations
        ).numpy()
    in_sizes = x.shape[2:]
    full_sizes = full.shape[2:]
    pad_type = as_str(pad_type, "pad_type").lower()
    starts, sizes = [], []
    for i in range(n):
        if pad_type == "valid":
            start, size = 0, full_sizes[i]
        elif pad_type == "custom":
            values = as_ints(pad, "pad") if pad is not None else [0] * (2 * n)
            if len(values) != 2 * n or any(v < 0 for v in values):
                raise ValueError(f"invalid pad {values}")
            start, size = values[2 * i], full_sizes[i] - values[2 * i] - values[2 * i + 1]
        elif pad_type in ("same", "same_lower"):
            size = in_sizes[i] * strides[i]
            total = max(full_sizes[i] - size, 0)
            start = total // 2 if pad_type == "same" else total - total // 2
        else:
            raise ValueError(f"unknown pad_type {pad_type!r}")
        starts.append(start)
        sizes.append(size)
    if output_shape is not None:
        shape = as_ints(output_shape, "output_shape")
        if len(shape) == n + 2:
            shape = shape[2:]
        if len(shape) != n:
            raise ValueError(f"output_shape {shape} does not have {n} spatial sizes")
        sizes = shape
    if any(s <= 0 for s in sizes):
        raise ValueError(f"output spatial size {sizes} is not positive")
    out = np.zeros(full.shape[:2] + tuple(sizes), dtype=full.dtype)
    src = [slice(None), slice(None)]
    dst = [slice(None), slice(None)]
    for start, size, full_size in zip(starts, sizes, full_sizes):
        stop = min(start + size, full_size)
        src.append(slice(start, stop))
        dst.append(slice(0, max(stop - start, 0)))
    out[tuple(dst)] = full[tuple(src)]
    if bias is not None:
        out += bias.astype(out.dtype).reshape((1, -1) + (1,) * n)
    return out


# -- prepared kernel (see kiln.mil.registry) ----------------------------------------------------

def _im2col_index(in_shape, padding, kernel, strides, dilations, out_sizes, groups):
    """Indices into one batch item of ``x`` flattened (plus a trailing zero for padding) whose
    gather is the im2col matrix ``[G, C_in/G * prod(K), prod(out)]``."""
    channels, spatial = in_shape[1], in_shape[2:]
    size = channels * int(np.prod(spatial))
    positions = np.arange(size, dtype=np.intp).reshape((1, channels) + tuple(spatial))
    padded = _pad_zeros(positions, padding) if any(p != (0, 0) for p in padding) else positions
    if any(p != (0, 0) for p in padding):
        # _pad_zeros filled with 0, a valid position: mark padding with the zero slot instead
        marker = _pad_zeros(np.ones((1, channels) + tuple(spatial), np.intp), padding)
        padded = np.where(marker == 1, padded, size)
    dilated = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    n = len(spatial)
    win = np.lib.stride_tricks.sliding_window_view(padded, dilated, axis=tuple(range(2, 2 + n)))
    index = (slice(None), slice(None))
    index += tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(out_sizes, strides))
    index += tuple(slice(None, None, d) for d in dilations)
    win = win[index]  # [1, C, *out, *K]
    out_flat, k_flat = int(np.prod(out_sizes)), int(np.prod(kernel))
    cg = channels // groups
    cols = win.reshape(groups, cg, out_flat, k_flat).transpose(0, 1, 3, 2)
    return np.ascontiguousarray(cols.reshape(groups, cg * k_flat, out_flat)), size


@prepares("conv", narrow=("weight",))
def prepare_conv(spec):
    """Geometry, im2col gather indices and the weight matrix fixed once: the kernel gathers the
    windows of ``x`` in one indexing step and multiplies."""
    shape = spec.static_shape("x")
    weight = spec.consts.get("weight")
    bias = spec.consts.get("bias")
    if shape is None or spec.dynamic != ("x",) or not isinstance(weight, np.ndarray):
        return None
    consts = {k: spec.consts.get(k) for k in ("strides", "pad_type", "pad", "dilations")}
    consts["groups"] = spec.consts.get("groups", 1)
    consts["pad_type"] = consts["pad_type"] if consts["pad_type"] is not None else "valid"
    probe = np.broadcast_to(np.zeros((), np.float32), shape)
    try:
        n, strides, dilations, groups, padding, out_sizes, use_im2col, _ = _conv_geometry(
            probe, np.broadcast_to(np.zeros((), np.float32), weight.shape), **consts, weight_matrix=False)
    except (ValueError, TypeError):
        return None
    batch, c_out = shape[0], weight.shape[0]
    bias32 = None if bias is None else np.asarray(bias, np.float32).reshape((1, -1) + (1,) * n)
    if use_im2col:
        index, size = _im2col_index(shape, padding, list(weight.shape[2:]), strides, dilations, out_sizes, groups)
        padded = any(p != (0, 0) for p in padding)
        wshape = (groups, c_out // groups, index.shape[1])
        out_shape = (batch, c_out) + tuple(out_sizes)
        if product_size(wshape, (batch,) + index.shape) >= TORCH_PRODUCT_MIN:
            wtorch = torch_float32_source(weight.reshape(wshape), spec.scratch)
            multiply = lambda cols: torch().matmul(wtorch(), to_torch(cols)).numpy()  # noqa: E731
        else:
            wmat = float32_source(weight.reshape(wshape), spec.scratch)
            multiply = lambda cols: np.matmul(wmat(), cols)  # noqa: E731

        # A gather that reads every element in place (a 1x1 conv, stride 1, no padding) is a
        # reshape: x is already its im2col matrix.
        in_place = not padded and index.size == size and np.array_equal(index.reshape(-1), np.arange(size))
        cols_shape = (batch,) + index.shape

        def kernel(x):
            if in_place:
                cols = x.reshape(cols_shape)
            elif padded:
                src = np.empty((batch, size + 1), np.float32)
                src[:, :size] = x.reshape(batch, size)
                src[:, size] = 0
                cols = src[:, index]
            else:
                cols = x.reshape(batch, size)[:, index]
            y = multiply(cols).reshape(out_shape)  # [N, G, C_out/G, out]
            if bias32 is not None:
                y += bias32
            return y

        kernel.fresh = True
        return kernel

    t = torch()
    flat = []
    for before, after in reversed(padding):
        flat += [before, after]
    # Symmetric padding is the conv's own (no padded copy of the input: 49 MB on the first
    # subsampling conv of a 15 s Parakeet encoder); asymmetric padding pads first.
    symmetric = all(before == after for before, after in padding)
    inner_padding = [before for before, _ in padding] if symmetric else 0
    pad_fn = (lambda xt: t.nn.functional.pad(xt, flat)) if any(flat) and not symmetric else (lambda xt: xt)
    conv_fn = getattr(t.nn.functional, _CONV[n])
    wsource = torch_float32_source(weight, spec.scratch)
    bt = None if bias is None else t.from_numpy(np.ascontiguousarray(bias, np.float32))

    def kernel(x):
        with t.no_grad():
            y = conv_fn(pad_fn(to_torch(x)), wsource(), bt, strides, inner_padding, dilations, groups)
        return y.numpy()

    kernel.fresh = True
    return kernel
