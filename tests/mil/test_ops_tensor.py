"""Conformance of tensor operation / transformation, gather-scatter, resizing and control flow ops."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from coremltools.converters.mil import Builder as mb
from milprog import run_program

RNG = np.random.default_rng(13)
X = RNG.standard_normal((2, 3, 4)).astype(np.float32)


def test_shape_ops(mil_dir):
    def build(x):
        return [
            mb.reshape(x=x, shape=[0, -1]),
            mb.reshape(x=x, shape=[1, 0, -1, 2]),  # iOS17: 0 aligned from the right
            mb.transpose(x=x, perm=[2, -3, 1]),
            mb.expand_dims(x=x, axes=[0, -1]),
            mb.squeeze(x=mb.expand_dims(x=x, axes=[1]), axes=[1]),
            mb.squeeze(x=mb.expand_dims(x=x, axes=[0, 3])),
            mb.slice_by_index(x=x, begin=[1, 0, 3], end=[2, 3, 0], stride=[1, 2, -1],
                              end_mask=[False, False, True]),
            mb.slice_by_index(x=x, begin=[0, -1, 1], end=[0, 0, 3], squeeze_mask=[True, False, False],
                              end_mask=[False, True, False]),
            mb.slice_by_size(x=x, begin=[0, 1, 1], size=[-1, 2, 2]),
            mb.concat(values=(x, mb.mul(x=x, y=2.0)), axis=-1),
            mb.concat(values=(x, mb.mul(x=x, y=2.0)), axis=1, interleave=True),
            mb.stack(values=(x, x), axis=1),
            mb.tile(x=x, reps=[1, 2, 1]),
            mb.reverse(x=x, axes=[0, 2]),
            mb.flatten2d(x=x, axis=-1),
            mb.pad(x=x, pad=[1, 2, 0, 3], mode="constant", constant_val=9.0),
            mb.pad(x=x, pad=[2, 1, 3, 2], mode="reflect"),
            mb.pad(x=x, pad=[0, 0, 1, 1, 2, 0], mode="replicate"),
            mb.band_part(x=x, lower=1, upper=0),
            mb.cumsum(x=x, axis=1, exclusive=True, reverse=True),
            mb.sliding_windows(x=x, axis=2, size=2, stride=2),
            mb.fill_like(ref_tensor=x, value=4.0),
        ]

    outs = run_program(build, {"x": X}, mil_dir, "iOS17")
    excl_rev = np.flip(np.cumsum(np.flip(X, 1), 1) - np.flip(X, 1), 1)
    m, n = np.arange(3)[:, None], np.arange(4)[None]
    refs = [
        X.reshape(3, 8), X.reshape(1, 2, 6, 2), X.transpose(2, 0, 1),  # iOS17 reshape: 0 aligned right
        X[None, ..., None], X, X,
        X[1:2, 0:3:2, 3::-1], X[0, -1:, 1:3], X[:, 1:3, 1:3], np.concatenate([X, 2 * X], -1),
        np.stack([X, 2 * X], 2).reshape(2, 6, 4), np.stack([X, X], 1), np.tile(X, (1, 2, 1)), X[::-1, :, ::-1],
        X.reshape(6, 4), np.pad(X, [(0, 0), (1, 2), (0, 3)], constant_values=9.0),
        np.pad(X, [(0, 0), (2, 1), (3, 2)], mode="reflect"), np.pad(X, [(0, 0), (1, 1), (2, 0)], mode="edge"),
        np.where((m - n <= 1) & (n - m <= 0), X, 0), excl_rev,
        np.stack([X[..., 0:2], X[..., 2:4]], axis=2), np.full_like(X, 4.0),
    ]
    for i, (got, want) in enumerate(zip(outs, refs)):
        assert got.shape == want.shape, (i, got.shape, want.shape)
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=str(i))


def test_split_topk_argsort_onehot_range(mil_dir):
    x = np.array([[3, 1, 4, 1, 5, 9], [2, 6, 5, 3, 5, 8]], np.float32)
    idx = np.array([0, 2, -1, 3], np.int32)

    def build(x, idx):
        a, b, c = mb.split(x=x, axis=1, split_sizes=[1, 2, 3])
        d, e = mb.split(x=x, axis=0, num_splits=2)
        values, indices = mb.topk(x=x, k=3, axis=1)
        low, low_i = mb.topk(x=x, k=2, axis=-1, ascending=True)
        return [a, b, c, d, e, values, indices, low, low_i, mb.argsort(x=x, axis=1),
                mb.argsort(x=x, axis=0, ascending=True),
                mb.one_hot(indices=idx, one_hot_vector_size=4, axis=0, on_value=5.0, off_value=-1.0),
                mb.range_1d(start=1.0, end=4.0, step=0.5), mb.shape(x=x),
                mb.fill(shape=[2, 1], value=7.0)]

    outs = run_program(build, {"x": x, "idx": idx}, mil_dir)
    order = np.argsort(-x, axis=1, kind="stable")
    oh = np.where(idx[None, :] == np.arange(4)[:, None], 5.0, -1.0)
    refs = [x[:, :1], x[:, 1:3], x[:, 3:], x[:1], x[1:], np.take_along_axis(x, order[:, :3], 1), order[:, :3],
            np.sort(x, 1)[:, :2], np.argsort(x, 1, kind="stable")[:, :2], order,
            np.argsort(x, 0, kind="stable"), oh, np.arange(1, 4, 0.5), np.array([2, 6]), np.full((2, 1), 7.0)]
    for i, (got, want) in enumerate(zip(outs, refs)):
        np.testing.assert_allclose(got, want, err_msg=str(i))


def test_gather_scatter(mil_dir):
    data = RNG.standard_normal((4, 5)).astype(np.float32)
    upd = RNG.standard_normal((2, 5)).astype(np.float32)
    along = np.array([[0, 4, 1], [3, 3, 0]], np.int32)
    along4 = np.array([[0, 4, 1], [3, 2, 0], [1, 1, 1], [4, 0, 2]], np.int32)
    upd4 = RNG.standard_normal((4, 3)).astype(np.float32)
    nd = np.array([[0, 1], [3, 4]], np.int32)

    def build(data, upd):
        return [
            mb.gather(x=data, indices=np.array([[3, 0], [1, 1]], np.int32), axis=0),
            mb.gather(x=data, indices=np.array([2, 0], np.int32), axis=-1),
            mb.gather_along_axis(x=data, indices=along4, axis=1),
            mb.gather_nd(x=data, indices=nd),
            mb.gather(x=mb.reshape(x=data, shape=[2, 2, 5]), indices=np.array([[1, 0], [0, 0]], np.int32),
                      axis=2, batch_dims=1),
            mb.scatter(data=data, indices=np.array([2, 2], np.int32), updates=upd, axis=0, mode="add"),
            mb.scatter(data=data, indices=np.array([1, 3], np.int32), updates=upd, axis=0, mode="update"),
            mb.scatter_along_axis(data=data, indices=along4, updates=upd4, axis=1, mode="mul"),
            mb.scatter_nd(data=data, indices=nd, updates=np.array([10.0, 20.0], np.float32), mode="max"),
        ]

    outs = run_program(build, {"data": data, "upd": upd}, mil_dir)
    r4 = data.reshape(2, 2, 5)
    s_add = data.copy(); s_add[2] += upd[0] + upd[1]
    s_upd = data.copy(); s_upd[[1, 3]] = upd
    s_mul = data.copy()
    for r in range(4):
        for c in range(3):
            s_mul[r, along4[r, c]] *= upd4[r, c]
    s_max = data.copy(); s_max[0, 1] = max(data[0, 1], 10); s_max[3, 4] = max(data[3, 4], 20)
    refs = [data[[[3, 0], [1, 1]]], data[:, [2, 0]], np.take_along_axis(data, along4, 1), data[nd[:, 0], nd[:, 1]],
            np.stack([r4[0][:, [1, 0]], r4[1][:, [0, 0]]]), s_add, s_upd, s_mul, s_max]
    for i, (got, want) in enumerate(zip(outs, refs)):
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=str(i))


def test_image_resizing(mil_dir):
    x = RNG.standard_normal((1, 2, 4, 5)).astype(np.float32)
    t = torch.from_numpy(x)

    def build(x):
        return [
            mb.upsample_nearest_neighbor(x=x, scale_factor_height=2, scale_factor_width=3),
            mb.upsample_bilinear(x=x, scale_factor_height=2, scale_factor_width=2, align_corners=True),
            mb.upsample_bilinear(x=x, scale_factor_height=2, scale_factor_width=2, align_corners=False),
            mb.resize_bilinear(x=x, target_size_height=7, target_size_width=3, sampling_mode="STRICT_ALIGN_CORNERS"),
            mb.resize_bilinear(x=x, target_size_height=6, target_size_width=9, sampling_mode="UNALIGN_CORNERS"),
            mb.resize_nearest_neighbor(x=x, target_size_height=8, target_size_width=10),
            mb.crop(x=x, crop_height=[1, 1], crop_width=[0, 2]),
            mb.resize(x=x, shape=[8, 0], resized_dims=np.uint32(2), sampling_mode="UNALIGN_CORNERS"),
        ]

    outs = run_program(build, {"x": x}, mil_dir, "iOS17")
    refs = [
        F.interpolate(t, scale_factor=(2, 3), mode="nearest"),
        F.interpolate(t, size=(8, 10), mode="bilinear", align_corners=True),
        F.interpolate(t, size=(8, 10), mode="bilinear", align_corners=False),
        F.interpolate(t, size=(7, 3), mode="bilinear", align_corners=True),
        F.interpolate(t, size=(6, 9), mode="bilinear", align_corners=False),
        F.interpolate(t, size=(8, 10), mode="nearest"),
        t[..., 1:3, 0:3],
        F.interpolate(t, size=(8, 5), mode="bilinear", align_corners=False),
    ]
    for i, (got, want) in enumerate(zip(outs, refs)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5, err_msg=str(i))


def test_resample_matches_grid_sample(mil_dir):
    x = RNG.standard_normal((1, 2, 5, 6)).astype(np.float32)
    grid = (RNG.random((1, 3, 4, 2)) * 2.4 - 1.2).astype(np.float32)

    def build(x, g):
        return [mb.resample(x=x, coordinates=g, sampling_mode="bilinear", padding_mode=mode, padding_value=0.0,
                            coordinates_mode="normalized_minus_one_to_one", align_corners=True)
                for mode in ("constant", "border")]

    outs = run_program(build, {"x": x, "g": grid}, mil_dir, "iOS17")
    for got, mode in zip(outs, ("zeros", "border")):
        want = F.grid_sample(torch.from_numpy(x), torch.from_numpy(grid), mode="bilinear", padding_mode=mode,
                             align_corners=True)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)


def test_cond_while_loop_select(mil_dir):
    x = np.array([1.5, -2.0, 3.0], np.float32)

    def build(x):
        def cond(a, n):
            return mb.less(x=n, y=np.float32(5.0))

        def body(a, n):
            return mb.mul(x=a, y=np.float32(2.0)), mb.add(x=n, y=np.float32(1.0))

        a, n = mb.while_loop(_cond=cond, _body=body, loop_vars=(x, np.float32(0.0)))
        total = mb.reduce_sum(x=x)
        picked = mb.cond(pred=mb.greater(x=total, y=np.float32(0.0)),
                         _true_fn=lambda: mb.add(x=a, y=np.float32(1.0)),
                         _false_fn=lambda: mb.sub(x=a, y=np.float32(1.0)))
        other = mb.cond(pred=mb.less(x=total, y=np.float32(0.0)),
                        _true_fn=lambda: mb.add(x=x, y=np.float32(1.0)),
                        _false_fn=lambda: mb.sub(x=x, y=np.float32(1.0)))
        return [a, n, picked, other, mb.select(cond=mb.greater(x=x, y=np.float32(0.0)), a=x, b=mb.mul(x=x, y=-1.0))]

    a, n, picked, other, sel = run_program(build, {"x": x}, mil_dir)
    np.testing.assert_allclose(a, x * 32)
    assert float(n) == 5.0
    np.testing.assert_allclose(picked, x * 32 + 1)
    np.testing.assert_allclose(other, x - 1)
    np.testing.assert_allclose(sel, np.abs(x))


def test_list_ops_directly():
    from kiln.mil.ops import control_flow as cf

    ls = cf.make_list(np.int32(2), np.bool_(True), [np.int32(3)], "fp32")
    ls = cf.list_write(ls, np.int32(3), np.ones(3, np.float32))
    assert int(cf.list_length(ls)) == 4
    np.testing.assert_array_equal(cf.list_read(ls, np.int32(0)), np.zeros(3))
    ls = cf.list_scatter(ls, np.array([0, 1], np.int32), np.full((2, 3), 2.0, np.float32))
    np.testing.assert_array_equal(cf.list_gather(ls, np.array([1, 3], np.int32)), [[2, 2, 2], [1, 1, 1]])


def test_scatter_takes_indices_of_any_rank_as_their_flattening():
    """MIL scatter: updates has data's shape with the axis dimension replaced by indices' whole
    shape (coremltools' type inference); each index, in order, combines its slice (found by
    coremltools' suite: TestScatter programmatic, indices of rank 2 and 3)."""
    from kiln.mil.ops.scatter_gather import scatter

    data = RNG.standard_normal((3, 4, 2)).astype(np.float32)
    indices = np.array([[1, 3, 1], [0, 1, 2]], np.int32)  # duplicates: 1 three times
    updates = RNG.standard_normal((3, 2, 3, 2)).astype(np.float32)
    for mode, combine in (("add", np.add), ("mul", np.multiply), ("max", np.maximum), ("update", None)):
        want = data.copy()
        for i in range(2):
            for j in range(3):
                target = want[:, indices[i, j], :]
                want[:, indices[i, j], :] = updates[:, i, j, :] if combine is None else combine(target, updates[:, i, j, :])
        np.testing.assert_allclose(scatter(data, indices, updates, axis=1, mode=mode), want, rtol=1e-6, err_msg=mode)
    with pytest.raises(ValueError, match=r"updates shape \[3, 6, 2\], expected \[3, 2, 3, 2\]"):
        scatter(data, indices, updates.reshape(3, 6, 2), axis=1, mode="add")
