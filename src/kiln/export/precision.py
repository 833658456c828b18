"""Which ops keep fp32 compute when a component is exported with fp16 compute precision.

Core ML's fp16 has an 11-bit mantissa and a maximum of 65504. Most of a network is fine with
that; a *phase accumulator* is not: a running sum of per-step phase increments (``cumsum``) that
is scaled and fed to ``sin``/``cos``, as in a harmonic-plus-noise source (Kokoro's iSTFTNet,
NSF vocoders). Its values grow with the window (Kokoro: up to 2 pi x 300 x the summed cycles,
beyond 65504 for a 15 s window, i.e. ``inf`` and then ``sin(inf)`` = NaN), and even below the
maximum fp16 keeps ``2^-11`` of the value, which at 5e4 is whole turns of the sine. Only the
angle modulo 2 pi matters, but rounding destroys it before ``sin`` can reduce it.

:func:`fp16_op_selector` is coremltools' ``op_selector`` for ``FP16ComputePrecision``: every op
on a path from a float ``cumsum`` to a periodic op (the cumsum, the scaling and resampling after
it, and the ``sin``/``cos`` themselves) stays fp32; everything else is cast to fp16 as usual.
It is a property of the graph, not of a model name, so any family's phase accumulator is covered.
"""

from __future__ import annotations

from typing import Callable

#: ops whose input is an angle: only its value modulo 2 pi matters, and fp16 loses that first
PERIODIC_OPS = frozenset({"sin", "cos"})
ACCUMULATOR_OPS = frozenset({"cumsum"})


def _is_float(var) -> bool:
    from coremltools.converters.mil.mil import types

    dtype = getattr(var, "dtype", None)
    return dtype is not None and types.is_float(dtype)


def phase_accumulator_ops(block) -> set[str]:
    """Names of the ops of ``block`` on a path from a float cumsum to a sin/cos (both included)."""
    reaches: dict[int, bool] = {}

    def reaches_periodic(op, depth: int = 0) -> bool:
        key = id(op)
        if key not in reaches:
            reaches[key] = False   # cycle guard (blocks are DAGs; nested blocks are not entered)
            found = op.op_type in PERIODIC_OPS
            if not found and depth < 64:
                found = any(reaches_periodic(child, depth + 1)
                            for out in op.outputs if _is_float(out) for child in out.child_ops)
            reaches[key] = found
        return reaches[key]

    kept: set[str] = set()

    def collect(op) -> None:
        if op.name in kept or not reaches_periodic(op):
            return
        kept.add(op.name)
        if op.op_type in PERIODIC_OPS:
            return
        for out in op.outputs:
            for child in out.child_ops:
                collect(child)

    for op in block.operations:
        if op.op_type in ACCUMULATOR_OPS and op.outputs and _is_float(op.outputs[0]):
            collect(op)
    return kept


def fp16_op_selector(report: dict | None = None) -> Callable:
    """``op_selector(op) -> bool`` (True: compute in fp16) keeping phase accumulators in fp32.
    ``report`` (optional) receives ``{"fp32_ops": [names], "fp32_op_types": {type: count}}``."""
    kept_by_block: dict[int, set[str]] = {}

    def select(op) -> bool:
        block = op.enclosing_block
        key = id(block)
        if key not in kept_by_block:
            kept_by_block[key] = phase_accumulator_ops(block)
            if report is not None:
                names = sorted(set(report.get("fp32_ops", [])) | kept_by_block[key])
                report["fp32_ops"] = names
        keep = op.name in kept_by_block[key]
        if keep and report is not None:
            types = report.setdefault("fp32_op_types", {})
            types[op.op_type] = types.get(op.op_type, 0) + 1
        return not keep

    return select
