"""Image resizing ops (coremltools defs iOS15/16/17 image_resizing.py). Spatial dims are the last
two (height, width); bilinear interpolation is separable along each of them."""

from __future__ import annotations

import numpy as np

from ..registry import register
from ._util import as_bool, as_float, as_int, as_ints, as_str

SAMPLING_MODES = ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS", "DEFAULT", "OFFSET_CORNERS", "UNALIGN_CORNERS")


def grid_points(n_in: int, n_out: int, mode: str) -> np.ndarray:
    """Sample positions (in input pixel units) for ``resize_bilinear``'s ``sampling_mode``."""
    i = np.arange(n_out, dtype=np.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if n_out == 1:
            g = np.array([(n_in - 1) / 2.0 if mode == "ALIGN_CORNERS" else 0.0])
        else:
            g = i * (n_in - 1) / (n_out - 1)
    elif mode == "DEFAULT":
        g = i * (n_in - n_in / n_out) / (n_out - 1) if n_out > 1 else np.zeros(1)
    elif mode == "OFFSET_CORNERS":
        delta = max(1, n_in - 1) / n_out
        g = 0.5 * delta + i * delta
    elif mode == "UNALIGN_CORNERS":
        spacing = n_in / n_out
        g = i * spacing + 0.5 * spacing - 0.5
    else:
        raise ValueError(f"unknown sampling_mode {mode!r} (known: {SAMPLING_MODES})")
    return np.clip(g, 0, n_in - 1)


def _interp_axis(x: np.ndarray, axis: int, points: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``x`` along ``axis`` at fractional ``points`` (within range)."""
    n = x.shape[axis]
    lo = np.floor(points).astype(np.intp)
    lo = np.clip(lo, 0, n - 1)
    hi = np.minimum(lo + 1, n - 1)
    w = (points - lo).astype(x.dtype)
    shape = [1] * x.ndim
    shape[axis] = -1
    w = w.reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - w) + np.take(x, hi, axis=axis) * w


def _bilinear(x, out_h, out_w, points_h, points_w):
    if x.ndim < 3:
        raise ValueError(f"resizing needs rank >= 3, got {x.ndim}")
    if out_h < 1 or out_w < 1:
        raise ValueError(f"output size {out_h}x{out_w} must be positive")
    y = _interp_axis(x, x.ndim - 2, points_h)
    return _interp_axis(y, x.ndim - 1, points_w)


def _nearest(x, rows, cols):
    if x.ndim < 3:
        raise ValueError(f"resizing needs rank >= 3, got {x.ndim}")
    rows = np.clip(rows, 0, x.shape[-2] - 1)
    cols = np.clip(cols, 0, x.shape[-1] - 1)
    return np.take(np.take(x, rows, axis=-2), cols, axis=-1)


@register("upsample_nearest_neighbor")
def upsample_nearest_neighbor(x, scale_factor_height=1, scale_factor_width=1):
    """MIL ``upsample_nearest_neighbor`` (iOS15+): output ``floor(H*s_h) x floor(W*s_w)``.

    The source pixel is ``floor(i * in / out)`` (the output/input size ratio, not ``floor(i / s)``):
    for a fractional scale the two differ, and coremltools' suite (checked on Apple's runtime)
    expects ``[1.5, -2.5, 3.5]`` for ``x = [1.5, -2.5, 3.5]`` at ``s_w = 1.12``."""
    sh, sw = as_float(scale_factor_height), as_float(scale_factor_width)
    if sh <= 0 or sw <= 0:
        raise ValueError("scale factors must be positive")
    if x.ndim < 3:
        raise ValueError(f"resizing needs rank >= 3, got {x.ndim}")
    h1, w1 = x.shape[-2:]
    h2, w2 = int(np.floor(h1 * sh)), int(np.floor(w1 * sw))
    if h2 < 1 or w2 < 1:
        raise ValueError(f"output size {h2}x{w2} must be positive")
    return _nearest(x, np.arange(h2) * h1 // h2, np.arange(w2) * w1 // w2)


@register("resize_nearest_neighbor")
def resize_nearest_neighbor(x, target_size_height, target_size_width):
    """MIL ``resize_nearest_neighbor`` (iOS15+): to the target size, source pixel ``floor(i * in / out)``."""
    h2, w2 = as_int(target_size_height), as_int(target_size_width)
    if h2 < 1 or w2 < 1:
        raise ValueError("target sizes must be positive")
    h1, w1 = x.shape[-2:]
    return _nearest(x, (np.arange(h2) * h1 // h2), (np.arange(w2) * w1 // w2))


def _upsample_points(n_in, n_out, align_corners, half_pixel_centers):
    i = np.arange(n_out, dtype=np.float64)
    if align_corners:
        g = i * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros(1)
    elif half_pixel_centers:
        spacing = n_in / n_out
        g = i * spacing + 0.5 * spacing - 0.5
    else:
        g = i * n_in / n_out
    return np.clip(g, 0, n_in - 1)


def _upsample_bilinear(x, sh, sw, align_corners, half_pixel_centers):
    sh, sw = as_float(sh), as_float(sw)
    if sh <= 0 or sw <= 0:
        raise ValueError("scale factors must be positive")
    if x.ndim < 3:
        raise ValueError(f"resizing needs rank >= 3, got {x.ndim}")
    h1, w1 = x.shape[-2:]
    h2, w2 = int(np.floor(h1 * sh)), int(np.floor(w1 * sw))
    return _bilinear(x, h2, w2, _upsample_points(h1, h2, align_corners, half_pixel_centers),
                     _upsample_points(w1, w2, align_corners, half_pixel_centers))


@register("upsample_bilinear")
def upsample_bilinear(x, scale_factor_height=1, scale_factor_width=1, align_corners=True):
    """MIL ``upsample_bilinear`` (iOS15): scale factors (output ``floor(H*s)``); ``align_corners``
    True spaces samples ``(in-1)/(out-1)``, False uses half-pixel centres."""
    ac = as_bool(align_corners)
    return _upsample_bilinear(x, scale_factor_height, scale_factor_width, ac, not ac)


@register("upsample_bilinear", since="iOS16")
def upsample_bilinear_ios16(x, scale_factor_height=1, scale_factor_width=1, align_corners=True,
                            half_pixel_centers=None):
    """MIL ``upsample_bilinear`` (iOS16+): adds ``half_pixel_centers`` (default ``not align_corners``);
    both False samples at ``i * in / out``."""
    ac = as_bool(align_corners)
    hp = (not ac) if half_pixel_centers is None else as_bool(half_pixel_centers)
    return _upsample_bilinear(x, scale_factor_height, scale_factor_width, ac, hp)


@register("resize_bilinear")
def resize_bilinear(x, target_size_height=1, target_size_width=1, sampling_mode="DEFAULT"):
    """MIL ``resize_bilinear`` (iOS15+): to the target size with ``sampling_mode`` grid placement."""
    mode = as_str(sampling_mode, "sampling_mode")
    h2, w2 = as_int(target_size_height), as_int(target_size_width)
    if h2 < 1 or w2 < 1 or x.ndim < 3:
        raise ValueError("target sizes must be positive and x of rank >= 3")
    h1, w1 = x.shape[-2:]
    return _bilinear(x, h2, w2, grid_points(h1, h2, mode), grid_points(w1, w2, mode))


@register("resize", since="iOS17")
def resize(x, shape, resized_dims, interpolation_mode="LINEAR", sampling_mode="DEFAULT"):
    """MIL ``resize`` (iOS17+): the last ``resized_dims`` dims of ``x`` take their sizes from the
    end of ``shape`` (``0`` keeps the input size); ``LINEAR`` or ``NEAREST_NEIGHBOR``."""
    target = as_ints(shape, "shape")
    n = as_int(resized_dims, "resized_dims")
    if not 0 <= n <= len(target) or len(target) > x.ndim:
        raise ValueError(f"resized_dims {n} invalid for shape {target} and rank {x.ndim}")
    mode = as_str(interpolation_mode, "interpolation_mode")
    sampling = as_str(sampling_mode, "sampling_mode")
    y = x
    for k in range(1, n + 1):
        axis = x.ndim - k
        n_in = x.shape[axis]
        n_out = target[-k] or n_in
        if n_out < 1:
            raise ValueError(f"target size {n_out} must be positive")
        if mode == "LINEAR":
            y = _interp_axis(y, axis, grid_points(n_in, n_out, sampling))
        elif mode == "NEAREST_NEIGHBOR":
            # the nearest sample of the sampling mode's grid, DEFAULT included: for 2 -> 3 rows the
            # DEFAULT grid is [0, 2/3, 4/3], so rows [0, 1, 1] (not floor(i * in / out) = [0, 0, 1])
            idx = np.floor(grid_points(n_in, n_out, sampling) + 0.5).astype(np.intp)
            y = np.take(y, np.clip(idx, 0, n_in - 1), axis=axis)
        else:
            raise ValueError(f"unknown interpolation_mode {mode!r}")
    return y


@register("crop")
def crop(x, crop_height, crop_width):
    """MIL ``crop`` (iOS15+): remove ``crop_height = [top, bottom]`` and ``crop_width = [left, right]``."""
    top, bottom = as_ints(crop_height, "crop_height")
    left, right = as_ints(crop_width, "crop_width")
    h, w = x.shape[-2:]
    if min(top, bottom, left, right) < 0 or top + bottom >= h + (h == 0) or left + right >= w + (w == 0):
        raise ValueError(f"crop {top, bottom, left, right} invalid for {h}x{w}")
    return x[..., top:h - bottom, left:w - right]


def _box_corners(box, mode):
    a, b, c, d = (float(v) for v in box)
    if mode == "CORNERS_HEIGHT_FIRST":
        return a, b, c, d
    if mode == "CORNERS_WIDTH_FIRST":
        return b, a, d, c
    if mode == "CENTER_SIZE_HEIGHT_FIRST":
        return a - c / 2, b - d / 2, a + c / 2, b + d / 2
    if mode == "CENTER_SIZE_WIDTH_FIRST":
        return b - d / 2, a - c / 2, b + d / 2, a + c / 2
    raise ValueError(f"unknown box_coordinate_mode {mode!r}")


def _box_points(start, end, n_out, mode):
    """Sample positions inside [start, end] (pixel units) following the resize sampling modes."""
    i = np.arange(n_out, dtype=np.float64)
    extent = end - start
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if n_out == 1:
            return np.array([start + extent / 2 if mode == "ALIGN_CORNERS" else start])
        return start + i * extent / (n_out - 1)
    size = extent + 1
    if mode == "DEFAULT":
        return start + (i * (size - size / n_out) / (n_out - 1) if n_out > 1 else np.zeros(1))
    if mode == "OFFSET_CORNERS":
        delta = max(1.0, size - 1) / n_out
        return start + 0.5 * delta + i * delta
    if mode == "UNALIGN_CORNERS":
        spacing = size / n_out
        return start + i * spacing + 0.5 * spacing - 0.5
    raise ValueError(f"unknown sampling_mode {mode!r}")


def _sample_box(image, y0, x0, y1, x1, th, tw, mode, pad_value):
    """Bilinear crop-and-resize of one [C, H, W] image; samples outside the image get pad_value."""
    h, w = image.shape[-2:]
    ys = _box_points(y0, y1, th, mode)
    xs = _box_points(x0, x1, tw, mode)
    out = _bilinear(image, th, tw, np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1))
    outside = (ys < 0) | (ys > h - 1)
    out[..., outside, :] = pad_value
    outside = (xs < 0) | (xs > w - 1)
    out[..., :, outside] = pad_value
    return out


def _crop_resize_boxes(x, boxes, indices, th, tw, normalized, spatial_scale, box_mode, sampling, pad_value):
    if x.ndim != 4:
        raise ValueError(f"crop_resize needs x of rank 4, got {x.ndim}")
    th, tw = as_int(th), as_int(tw)
    if th < 1 or tw < 1:
        raise ValueError("target sizes must be positive")
    h, w = x.shape[-2:]
    scale = as_float(spatial_scale)
    results = []
    for box, b in zip(boxes, indices):
        if not 0 <= b < x.shape[0]:
            raise ValueError(f"box index {b} out of range for batch {x.shape[0]}")
        y0, x0, y1, x1 = _box_corners(np.asarray(box, np.float64) * scale, box_mode)
        if normalized:
            y0, y1, x0, x1 = y0 * (h - 1), y1 * (h - 1), x0 * (w - 1), x1 * (w - 1)
        results.append(_sample_box(x[b].astype(np.float32), y0, x0, y1, x1, th, tw, sampling, pad_value))
    return np.stack(results) if results else np.zeros((0, x.shape[1], th, tw), np.float32)


def _crop_resize_roi(x, roi, target_height, target_width, normalized_coordinates, spatial_scale,
                     box_coordinate_mode, sampling_mode, pad_value):
    roi = np.asarray(roi)
    if roi.ndim != 5 or roi.shape[2] not in (4, 5):
        raise ValueError(f"roi must be [N, 1, 4|5, 1, 1], got {list(roi.shape)}")
    rows = roi.reshape(roi.shape[0], roi.shape[2])
    args = (as_int(target_height), as_int(target_width), as_bool(normalized_coordinates),
            spatial_scale, as_str(box_coordinate_mode), as_str(sampling_mode), as_float(pad_value))
    if rows.shape[1] == 5:
        out = _crop_resize_boxes(x, rows[:, 1:], [int(i) for i in rows[:, 0]], *args)
        return out[:, None]
    per_batch = [
        _crop_resize_boxes(x, rows, [b] * rows.shape[0], *args) for b in range(x.shape[0])
    ]
    return np.stack(per_batch, axis=1)


@register("crop_resize")
def crop_resize(x, roi, target_height=1, target_width=1, normalized_coordinates=False, spatial_scale=1.0,
                box_coordinate_mode="CORNERS_HEIGHT_FIRST", sampling_mode="DEFAULT"):
    """MIL ``crop_resize`` (iOS15): bilinear crops of ``roi`` boxes, output ``[N, B|1, C, th, tw]``."""
    return _crop_resize_roi(x, roi, target_height, target_width, normalized_coordinates, spatial_scale,
                            box_coordinate_mode, sampling_mode, 0.0)


@register("crop_resize", since="iOS16")
def crop_resize_ios16(x, roi, target_height=1, target_width=1, normalized_coordinates=False,
                      spatial_scale=1.0, box_coordinate_mode="CORNERS_HEIGHT_FIRST",
                      sampling_mode="DEFAULT", pad_value=0.0):
    """MIL ``crop_resize`` (iOS16): adds ``pad_value`` for samples outside the image."""
    return _crop_resize_roi(x, roi, target_height, target_width, normalized_coordinates, spatial_scale,
                            box_coordinate_mode, sampling_mode, pad_value)


@register("crop_resize", since="iOS17")
def crop_resize_ios17(x, boxes, box_indices=None, target_height=1, target_width=1,
                      normalized_coordinates=False, spatial_scale=1.0,
                      box_coordinate_mode="CORNERS_HEIGHT_FIRST", sampling_mode="DEFAULT", pad_value=0.0):
    """MIL ``crop_resize`` (iOS17+): ``boxes [N, 4]`` with ``box_indices [N]`` (default ``arange(N)``),
    output ``[N, C, th, tw]``."""
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be [N, 4], got {list(boxes.shape)}")
    indices = list(range(boxes.shape[0])) if box_indices is None else as_ints(box_indices, "box_indices")
    if len(indices) != boxes.shape[0]:
        raise ValueError("box_indices must have one entry per box")
    return _crop_resize_boxes(x, boxes, indices, target_height, target_width, as_bool(normalized_coordinates),
                              spatial_scale, as_str(box_coordinate_mode), as_str(sampling_mode),
                              as_float(pad_value))


def _pad_index(idx, n, mode):
    """Map integer sample indices to valid ones; returns (indices, valid mask)."""
    if mode == "constant":
        return np.clip(idx, 0, n - 1), (idx >= 0) & (idx < n)
    if mode == "border":
        return np.clip(idx, 0, n - 1), np.ones(idx.shape, bool)
    if mode == "reflection":
        if n == 1:
            return np.zeros_like(idx), np.ones(idx.shape, bool)
        period = 2 * (n - 1)
        m = np.mod(idx, period)
        return np.where(m >= n, period - m, m), np.ones(idx.shape, bool)
    if mode == "symmetric":
        period = 2 * n
        m = np.mod(idx, period)
        return np.where(m >= n, period - 1 - m, m), np.ones(idx.shape, bool)
    raise ValueError(f"unknown padding_mode {mode!r}")


def _to_pixels(coord, n, coordinates_mode, align_corners):
    if coordinates_mode == "unnormalized":
        return coord
    if coordinates_mode == "normalized_minus_one_to_one":
        return (coord + 1) / 2 * (n - 1) if align_corners else ((coord + 1) * n - 1) / 2
    if coordinates_mode == "normalized_zero_to_one":
        return coord * (n - 1) if align_corners else coord * n - 0.5
    raise ValueError(f"unknown coordinates_mode {coordinates_mode!r}")


def _resample(x, coordinates, sampling_mode, padding_mode, padding_value, coordinates_mode, align_corners):
    if x.ndim != 4 or np.ndim(coordinates) != 4 or np.shape(coordinates)[-1] != 2:
        raise ValueError("resample needs x [B, C, H, W] and coordinates [B, H2, W2, 2]")
    if np.shape(coordinates)[0] != x.shape[0]:
        raise ValueError("batch sizes of x and coordinates differ")
    h, w = x.shape[-2:]
    coords = np.asarray(coordinates, np.float64)
    px = _to_pixels(coords[..., 0], w, coordinates_mode, align_corners)
    py = _to_pixels(coords[..., 1], h, coordinates_mode, align_corners)
    pad = np.asarray(padding_value, x.dtype)
    b = np.arange(x.shape[0])[:, None, None]

    def fetch(iy, ix):  # -> [B, H2, W2, C]
        yy, vy = _pad_index(iy, h, padding_mode)
        xx, vx = _pad_index(ix, w, padding_mode)
        vals = np.moveaxis(x, 1, -1)[b, yy, xx]
        return np.where((vy & vx)[..., None], vals, pad)

    if sampling_mode == "nearest":
        out = fetch(np.floor(py + 0.5).astype(np.intp), np.floor(px + 0.5).astype(np.intp))
    elif sampling_mode == "bilinear":
        x0 = np.floor(px).astype(np.intp)
        y0 = np.floor(py).astype(np.intp)
        wx = (px - x0)[..., None].astype(x.dtype)
        wy = (py - y0)[..., None].astype(x.dtype)
        out = (fetch(y0, x0) * (1 - wy) * (1 - wx) + fetch(y0, x0 + 1) * (1 - wy) * wx
               + fetch(y0 + 1, x0) * wy * (1 - wx) + fetch(y0 + 1, x0 + 1) * wy * wx)
    else:
        raise ValueError(f"unknown sampling_mode {sampling_mode!r}")
    return np.moveaxis(out, -1, 1)


@register("resample")
def resample(x, coordinates, sampling_mode, padding_mode, padding_value, coordinates_mode, align_corners):
    """MIL ``resample`` (iOS15+; iOS16/17 widen the coordinate dtypes): sample ``x`` at ``(x, y)``
    coordinates, bilinear or nearest, with constant / border / reflection / symmetric padding."""
    return _resample(x, coordinates, as_str(sampling_mode), as_str(padding_mode), padding_value,
                     as_str(coordinates_mode), as_bool(align_corners))


@register("affine")
def affine(x, transform_matrix, output_height, output_width, sampling_mode, padding_mode, padding_value,
           coordinates_mode, align_corners):
    """MIL ``affine`` (iOS15+): output pixel ``(x, y)`` samples the input at
    ``(a0 x + a1 y + a2, b0 x + b1 y + b2)`` in ``coordinates_mode`` units."""
    if x.ndim != 4:
        raise ValueError(f"affine needs x of rank 4, got {x.ndim}")
    m = np.asarray(transform_matrix, np.float64)
    if m.ndim != 2 or m.shape[1] != 6 or m.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"transform_matrix must be [1|B, 6], got {list(m.shape)}")
    oh, ow = as_int(output_height), as_int(output_width)
    if oh < 1 or ow < 1:
        raise ValueError("output size must be positive")
    mode = as_str(coordinates_mode)
    ac = as_bool(align_corners)

    def out_coords(n):
        i = np.arange(n, dtype=np.float64)
        if mode == "unnormalized":
            return i
        if mode == "normalized_zero_to_one":
            return i / (n - 1) if ac and n > 1 else (i + 0.5) / n
        return (2 * i / (n - 1) - 1) if ac and n > 1 else (2 * i + 1) / n - 1

    gy, gx = np.meshgrid(out_coords(oh), out_coords(ow), indexing="ij")
    m = np.broadcast_to(m, (x.shape[0], 6))
    sx = m[:, 0, None, None] * gx + m[:, 1, None, None] * gy + m[:, 2, None, None]
    sy = m[:, 3, None, None] * gx + m[:, 4, None, None] * gy + m[:, 5, None, None]
    coords = np.stack([sx, sy], axis=-1)
    return _resample(x, coords, as_str(sampling_mode), as_str(padding_mode), padding_value, mode, ac)
