"""``const`` and every ``constexpr_*`` form (iOS16 attributes, iOS18 inputs incl. sub-byte types),
materialised by kiln from saved packages, vs coremltools' static ``decompress`` helpers."""

import numpy as np
import pytest
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types
from coremltools.converters.mil.mil.ops.defs.iOS16 import constexpr_ops as ios16
from coremltools.converters.mil.mil.ops.defs.iOS18 import compression as ios18
from coremltools.optimize import _utils as opt_utils
from milprog import run_program

RNG = np.random.default_rng(5)


def _zeros(shape):
    return np.zeros(shape, np.float32)


def test_ios16_constexpr_forms(mil_dir):
    q = RNG.integers(-128, 128, (4, 3, 5)).astype(np.int8)
    zp = RNG.integers(-5, 5, 3).astype(np.int8)
    scale = (RNG.random(3) + 0.1).astype(np.float32)
    lut = RNG.standard_normal(16).astype(np.float32)
    idx = RNG.integers(0, 16, 4 * 3 * 5).astype(np.uint8)
    packed = opt_utils.pack_elements_into_bits(idx, 4)
    lut6 = RNG.standard_normal(64).astype(np.float32)
    idx6 = RNG.integers(0, 64, 4 * 3 * 5).astype(np.uint8)
    packed6 = opt_utils.pack_elements_into_bits(idx6, 6)
    dense = RNG.standard_normal((4, 3, 5)).astype(np.float32) * (RNG.random((4, 3, 5)) > 0.6)
    mask = np.packbits((dense != 0).reshape(-1), bitorder="little")
    nonzero = dense[dense != 0]
    half = RNG.standard_normal((4, 3, 5)).astype(np.float16)
    shape = np.array([4, 3, 5], np.uint32)

    def build(z):
        return [
            mb.add(x=z, y=mb.constexpr_affine_dequantize(quantized_data=q, zero_point=zp, scale=scale, axis=1)),
            mb.add(x=z, y=mb.constexpr_lut_to_dense(indices=packed, lut=lut, shape=shape)),
            mb.add(x=z, y=mb.constexpr_lut_to_dense(indices=packed6, lut=lut6, shape=shape)),
            mb.add(x=z, y=mb.constexpr_sparse_to_dense(nonzero_data=nonzero, mask=mask, shape=shape)),
            mb.add(x=z, y=mb.constexpr_cast(source_val=half, output_dtype="fp32")),
        ]

    outs = run_program(build, {"z": _zeros((4, 3, 5))}, mil_dir, "iOS16")
    refs = [
        ios16.constexpr_affine_dequantize.decompress(q, zp, scale, 1),
        ios16.constexpr_lut_to_dense.decompress(lut, packed, shape),
        ios16.constexpr_lut_to_dense.decompress(lut6, packed6, shape),
        ios16.constexpr_sparse_to_dense.decompress(nonzero, mask, shape),
        half.astype(np.float32),
    ]
    for i, (got, want) in enumerate(zip(outs, refs)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=str(i))


def test_ios18_constexpr_forms(mil_dir):
    data4 = RNG.integers(-8, 8, (4, 6)).astype(types.np_int4_dtype)
    scale = (RNG.random((2, 3)) + 0.1).astype(np.float32)
    offset = RNG.integers(-3, 3, (2, 3)).astype(types.np_int4_dtype)
    idx = RNG.integers(0, 4, (6, 4)).astype(types.np_uint2_dtype)
    lut = RNG.standard_normal((2, 1, 4, 1)).astype(np.float32)  # 2 groups along axis 0
    vidx = RNG.integers(0, 2, (2, 2, 2)).astype(types.np_uint1_dtype)
    vlut = RNG.standard_normal((1, 1, 1, 2, 3)).astype(np.float32)  # vector size 3
    mask = (RNG.random((4, 6)) > 0.5).astype(types.np_uint1_dtype)
    nz = RNG.standard_normal(int(mask.sum())).astype(np.float32)
    nz_idx = RNG.integers(0, 8, int(mask.sum())).astype(types.np_uint3_dtype)
    lut8 = RNG.standard_normal((1, 1, 8, 1)).astype(np.float32)
    nz_q = RNG.integers(0, 16, int(mask.sum())).astype(types.np_uint4_dtype)
    qscale = (RNG.random((1, 6)) + 0.1).astype(np.float32)
    qoffset = RNG.integers(0, 16, (1, 6)).astype(types.np_uint4_dtype)

    def build(z, z3):
        m1, v1 = mb.constexpr_lut_to_sparse(indices_mask=mask, indices_nonzero_data=nz_idx, lut=lut8)
        m2, v2 = mb.constexpr_sparse_blockwise_shift_scale(data_mask=mask, nonzero_data=nz_q, scale=qscale, offset=qoffset)
        return [
            mb.add(x=z, y=mb.constexpr_blockwise_shift_scale(data=data4, scale=scale, offset=offset)),
            mb.add(x=mb.transpose(x=z, perm=[1, 0]), y=mb.constexpr_lut_to_dense(indices=idx, lut=lut)),
            mb.add(x=z3, y=mb.constexpr_lut_to_dense(indices=vidx, lut=vlut, vector_axis=1)),
            mb.add(x=z, y=mb.constexpr_sparse_to_dense(nonzero_data=nz, mask=mask)),
            mb.add(x=z, y=mb.constexpr_sparse_to_dense(nonzero_data=v1, mask=m1)),
            mb.add(x=z, y=mb.constexpr_sparse_to_dense(nonzero_data=v2, mask=m2)),
        ]

    outs = run_program(build, {"z": _zeros((4, 6)), "z3": _zeros((2, 6, 2))}, mil_dir, "iOS18")
    lm, lv = ios18.constexpr_lut_to_sparse.decompress(mask, nz_idx, lut8, None)
    qm, qv = ios18.constexpr_sparse_blockwise_shift_scale.decompress(mask, nz_q, qscale, qoffset)
    refs = [
        ios18.constexpr_blockwise_shift_scale.decompress(data4, scale, offset),
        ios18.constexpr_lut_to_dense.decompress(idx, lut, None),
        ios18.constexpr_lut_to_dense.decompress(vidx, vlut, 1),
        ios18.constexpr_sparse_to_dense.decompress(nz, mask),
        ios18.constexpr_sparse_to_dense.decompress(lv, lm),
        ios18.constexpr_sparse_to_dense.decompress(qv, qm),
    ]
    for i, (got, want) in enumerate(zip(outs, refs)):
        assert got.shape == want.shape, (i, got.shape, want.shape)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=str(i))


def test_fp16_constexpr_output_is_rounded_to_fp16():
    from kiln.mil.ops.constexpr import constexpr_affine_dequantize
    from kiln.mil.output_checks import make_output_fixer
    from kiln.mil.values import TensorType
    from kiln.mil import dtypes

    q = np.array([[1, 2], [3, 4]], np.int8)
    scale = np.array([0.1, 0.3], np.float32)
    raw = constexpr_affine_dequantize(q, np.int8(0), scale, np.int32(0))
    fixed = make_output_fixer(TensorType(dtypes.BY_NAME["fp16"], (2, 2)), dtypes.FP16)(raw)
    np.testing.assert_array_equal(fixed, raw.astype(np.float16).astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        make_output_fixer(TensorType(dtypes.BY_NAME["fp16"], (4,)), dtypes.FP16)(raw)
