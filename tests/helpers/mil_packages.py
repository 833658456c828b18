"""Small `.mlpackage`s built with coremltools' MIL builder, covering value kinds and weight
compressions the golden models lack: session fixtures shared by the compiler tests (tests/compile)
and the MIL text tests (tests/coreml/mil_text), registered by tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def _convert(prog, target, path: Path):
    import coremltools as ct

    model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=target,
                       pass_pipeline=ct.PassPipeline.EMPTY, compute_precision=ct.precision.FLOAT32)
    model.save(str(path))
    return model


@pytest.fixture(scope="session")
def value_kinds_package(tmp_path_factory) -> Path:
    """iOS17: string/bool/int8..uint32/fp16 consts, a blob, variadic concat, cond and while_loop."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 3), dtype=types.fp32)], opset_version=ct.target.iOS17)
    def prog(x):
        mb.const(val='he said "hi"\n\ttab\\ ünï', name="a_string")
        mb.const(val=np.array([True, False, True]), name="bools")
        mb.const(val=np.array([-128, 0, 127], dtype=np.int8), name="i8")
        mb.const(val=np.array([0, 255], dtype=np.uint8), name="u8")
        mb.const(val=np.array([-32768, 5], dtype=np.int16), name="i16")
        mb.const(val=np.array([65535, 1], dtype=np.uint16), name="u16")
        mb.const(val=np.array([4294967295, 3], dtype=np.uint32), name="u32")
        mb.const(val=np.array([0.1, -2.5, 6e-8, 65504, -0.0], dtype=np.float16), name="f16")
        mb.const(val=np.float32(0.1), name="f32_scalar")
        mb.const(val=np.array([[1.0, -2.0], [np.inf, -np.inf]], dtype=np.float32), name="f32_inf")
        mb.const(val=np.arange(24, dtype=np.float32).reshape(2, 3, 4), name="blob_weight")
        y = mb.add(x=x, y=np.float32(1.5))
        both = mb.concat(values=[x, y], axis=0)
        column_sums = mb.reduce_sum(x=both, axes=[0], keep_dims=False)
        positive = mb.greater(x=mb.reduce_sum(x=column_sums, axes=[0]), y=np.float32(0.0))
        chosen = mb.cond(pred=positive,
                         _true_fn=lambda: mb.mul(x=column_sums, y=np.float32(2.0)),
                         _false_fn=lambda: mb.sub(x=column_sums, y=np.float32(1.0)))

        def loop_cond(i, acc):
            return mb.less(x=i, y=np.int32(3))

        def loop_body(i, acc):
            return mb.add(x=i, y=np.int32(1)), mb.add(x=acc, y=chosen)

        _, total = mb.while_loop(_cond=loop_cond, _body=loop_body, loop_vars=(np.int32(0), chosen))
        return total

    path = tmp_path_factory.mktemp("kinds") / "value_kinds.mlpackage"
    _convert(prog, ct.target.iOS17, path)
    return path


def _linear_program(target):
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((32, 64)).astype(np.float32)
    bias = rng.standard_normal(32).astype(np.float32)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 64), dtype=types.fp32)], opset_version=target)
    def prog(x):
        return mb.relu(x=mb.linear(x=x, weight=weight, bias=bias))

    return prog


@pytest.fixture(scope="session")
def compressed_packages(tmp_path_factory) -> dict[str, Path]:
    """iOS16 int8 (constexpr_affine_dequantize), iOS18 int4 per-block (constexpr_blockwise_shift_scale
    with a sub-byte blob) and iOS18 4-bit palettization (uint4 indices)."""
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    root = tmp_path_factory.mktemp("compressed")
    out = {}
    ios16 = ct.convert(_linear_program(ct.target.iOS16), convert_to="mlprogram",
                       minimum_deployment_target=ct.target.iOS16, compute_precision=ct.precision.FLOAT32)
    int8 = cto.linear_quantize_weights(ios16, cto.OptimizationConfig(
        global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric", weight_threshold=0)))
    out["int8_ios16"] = root / "int8_ios16.mlpackage"
    int8.save(str(out["int8_ios16"]))

    ios18 = ct.convert(_linear_program(ct.target.iOS18), convert_to="mlprogram",
                       minimum_deployment_target=ct.target.iOS18, compute_precision=ct.precision.FLOAT32)
    int4 = cto.linear_quantize_weights(ios18, cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=16, weight_threshold=0)))
    out["int4_ios18"] = root / "int4_ios18.mlpackage"
    int4.save(str(out["int4_ios18"]))

    palette = cto.palettize_weights(ios18, cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(
        mode="uniform", nbits=4, weight_threshold=0)))
    out["palette4_ios18"] = root / "palette4_ios18.mlpackage"
    palette.save(str(out["palette4_ios18"]))
    return out
