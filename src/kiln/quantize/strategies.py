"""Compression strategies: a table of small functions, one per strategy.

Each entry states the minimum deployment target it needs (coremltools refuses iOS18 modes below
iOS18 and silently raises iOS15 models to iOS16), the ``constexpr_*`` ops its output must contain
(checked after compression, so a silent no-op cannot pass as a quantized model), and a function
``(mlmodel, context) -> mlmodel``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

TARGET_ORDER = ("iOS15", "iOS16", "iOS17", "iOS18")


@dataclass(frozen=True)
class QuantizeContext:
    """Settings shared by every strategy of one job."""

    weight_threshold: int = 2048
    skip_ops: tuple[str, ...] = ()
    workers: int = 1                       # k-means processes: the job's cores
    params: dict = field(default_factory=dict)

    def optimization_config(self, op_config):
        import coremltools.optimize.coreml as cto

        # op types listed in skip_ops keep float weights
        return cto.OptimizationConfig(global_config=op_config,
                                      op_type_configs={op: None for op in self.skip_ops} or None)


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    min_target: str
    expected_ops: tuple[str, ...]
    apply: Callable


STRATEGIES: dict[str, Strategy] = {}


def strategy(name: str, description: str, *, min_target: str, expected_ops: tuple[str, ...]):
    def register(fn):
        STRATEGIES[name] = Strategy(name, description, min_target, expected_ops, fn)
        return fn
    return register


def _cto():
    import coremltools.optimize.coreml as cto
    return cto


LINEAR_OPS = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale")
LUT_OPS = ("constexpr_lut_to_dense",)


def _linear(mlmodel, ctx: QuantizeContext, **kwargs):
    cto = _cto()
    config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", weight_threshold=ctx.weight_threshold, **kwargs)
    return cto.linear_quantize_weights(mlmodel, config=ctx.optimization_config(config))


def _palettize(mlmodel, ctx: QuantizeContext, **kwargs):
    from coremltools.optimize.coreml._quantization_passes import palettize_weights as kmeans_pass

    cto = _cto()
    config = cto.OpPalettizerConfig(mode="kmeans", weight_threshold=ctx.weight_threshold,
                                    num_kmeans_workers=max(1, ctx.workers), **kwargs)
    # coremltools 9.0 keeps one k-means process pool on the pass class and closes it when a pass
    # instance is garbage-collected without forgetting it: the next palettization then fails with
    # "Pool not running"; kiln starts every call without a pool and ends the one it made. Its pool
    # forks the job's process, in which torch and OpenMP already run threads: the forked k-means
    # workers then hang in OpenMP (seen here). So quantize jobs run k-means in-process, one job per
    # core, and Snakemake runs jobs in parallel (`--cores`); `workers` > 1 is for jobs that load no
    # torch model.
    kmeans_pass._compress_pool = None
    try:
        return cto.palettize_weights(mlmodel, config=ctx.optimization_config(config))
    finally:
        pool, kmeans_pass._compress_pool = kmeans_pass._compress_pool, None
        if pool is not None:
            pool.terminate()


@strategy("int8_per_channel", "int8 linear symmetric, one scale per output channel",
          min_target="iOS16", expected_ops=LINEAR_OPS)
def int8_per_channel(mlmodel, ctx):
    return _linear(mlmodel, ctx, dtype="int8", granularity="per_channel")


@strategy("int8_per_tensor", "int8 linear symmetric, one scale per tensor",
          min_target="iOS16", expected_ops=LINEAR_OPS)
def int8_per_tensor(mlmodel, ctx):
    return _linear(mlmodel, ctx, dtype="int8", granularity="per_tensor")


@strategy("palettize_8bit", "8-bit k-means palettization (256-entry LUT per tensor)",
          min_target="iOS16", expected_ops=LUT_OPS)
def palettize_8bit(mlmodel, ctx):
    return _palettize(mlmodel, ctx, nbits=8)


@strategy("palettize_6bit", "6-bit k-means palettization (64-entry LUT per tensor)",
          min_target="iOS16", expected_ops=LUT_OPS)
def palettize_6bit(mlmodel, ctx):
    return _palettize(mlmodel, ctx, nbits=6)


@strategy("palettize_4bit", "4-bit k-means palettization (16-entry LUT per tensor)",
          min_target="iOS16", expected_ops=LUT_OPS)
def palettize_4bit(mlmodel, ctx):
    return _palettize(mlmodel, ctx, nbits=4)


@strategy("prune_50_int8", "50% magnitude pruning jointly with int8 per-channel quantization",
          min_target="iOS18", expected_ops=("constexpr_sparse_to_dense", "constexpr_sparse_blockwise_shift_scale"))
def prune_50_int8(mlmodel, ctx):
    cto = _cto()
    pruned = cto.prune_weights(mlmodel, config=ctx.optimization_config(cto.OpMagnitudePrunerConfig(
        target_sparsity=0.5, weight_threshold=ctx.weight_threshold)))
    config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                         weight_threshold=ctx.weight_threshold)
    return cto.linear_quantize_weights(pruned, config=ctx.optimization_config(config), joint_compression=True)


@strategy("int4_per_block", "int4 linear symmetric, one scale per block of 32 input channels",
          min_target="iOS18", expected_ops=("constexpr_blockwise_shift_scale",))
def int4_per_block(mlmodel, ctx):
    return _linear(mlmodel, ctx, dtype="int4", granularity="per_block",
                   block_size=int(ctx.params.get("block_size", 32)))


@strategy("palettize_4bit_grouped", "4-bit k-means palettization, one LUT per group of 16 channels",
          min_target="iOS18", expected_ops=LUT_OPS)
def palettize_4bit_grouped(mlmodel, ctx):
    return _palettize(mlmodel, ctx, nbits=4, granularity="per_grouped_channel",
                      group_size=int(ctx.params.get("group_size", 16)))


def floor_scales(quantize: Callable) -> Callable:
    """``quantize_weight_by_dtype`` with every scale at least the smallest positive value the weight
    dtype stores.

    coremltools 9.0 divides each slice by ``range / levels``: a slice whose range is 0 (an all-zero
    row, e.g. an embedding's padding row) gets scale 0 and quantized values ``round(0 / 0)`` = NaN,
    cast to int8 as whatever the platform gives; a tiny range stores a scale that flushes to 0 in
    the weight's dtype. Such slices get the floor scale
    and their values re-quantized with it, so a zero row dequantizes to exactly 0."""
    def quantize_floored(weight, axes, dtype, quantization_mode):
        with np.errstate(invalid="ignore", divide="ignore"):
            quantized, scale, zero_point = quantize(weight, axes, dtype, quantization_mode)
        floor = float(np.finfo(weight.dtype).smallest_subnormal)
        kept = np.amax(np.abs(weight), axis=axes, keepdims=True)      # the slices' shape
        scale_full = np.asarray(scale, dtype=np.float64).reshape(kept.shape)
        low = ~np.isfinite(scale_full) | (scale_full < floor)
        if not low.any():
            return quantized, scale, zero_point
        from coremltools.optimize._utils import get_quant_range_by_dtype

        q_min, q_max = get_quant_range_by_dtype(dtype, quantization_mode)
        zp_full = np.zeros(kept.shape) if zero_point is None else \
            np.asarray(zero_point, dtype=np.float64).reshape(kept.shape)
        zp_full = np.where(low & ~np.isfinite(zp_full), np.clip(0, q_min, q_max), zp_full)
        scale_full = np.where(low, floor, scale_full)
        requantized = np.clip(np.round(weight / scale_full) + zp_full, q_min, q_max)
        quantized = np.where(np.broadcast_to(low, weight.shape), requantized, quantized)
        return (quantized, scale_full.astype(weight.dtype).squeeze(),
                None if zero_point is None else zp_full.squeeze().astype(np.asarray(zero_point).dtype))
    return quantize_floored


@contextlib.contextmanager
def floored_scales() -> Iterator[None]:
    """Within the block, coremltools' linear quantization uses :func:`floor_scales` (every linear
    strategy, the joint prune + int8 one included, goes through this one function)."""
    from coremltools.optimize import _utils

    original = _utils.quantize_weight_by_dtype
    _utils.quantize_weight_by_dtype = floor_scales(original)
    try:
        yield
    finally:
        _utils.quantize_weight_by_dtype = original


def needs_target(strategy_name: str, base_target: str) -> str:
    """The deployment target the component must be exported at for this strategy."""
    required = STRATEGIES[strategy_name].min_target
    return max(base_target, required, key=TARGET_ORDER.index)
