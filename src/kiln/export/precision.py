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
it, and the ``sin``/``cos`` themselves) stays fp32; so does every op on a path from those periodic
ops to the first convolution after them, the convolution included. That convolution is the
source's analysis transform (Kokoro: the harmonic source's STFT, a strided conv with a DFT basis):
an fp16 op stores its weight in fp16, and a DFT basis rounded to 11 bits is what limited Kokoro's
fp32 plan to correlation 0.9976 with kokoro's own KModel (rounding only that basis inside KModel
gives 0.9975); kept fp32, the constant stays fp32. The ops between (amplitude, noise mix, the
harmonics' merge, tanh, padding) are a few small elementwise ops. Everything else is cast to fp16
as usual. It is a property of the graph, not of a model name, so any family's phase accumulator
is covered, and a network without one (Silero, Parakeet) exports exactly as before.

A component may name more ops to keep in fp32 (``export.fp32_ops`` in config.yaml, by the MIL
names the fp16 report in metadata.json uses): the fallback for an op whose activations approach
or exceed fp16's maximum on the component's inputs.
"""

from __future__ import annotations

import re
from typing import Callable

#: ops whose input is an angle: only its value modulo 2 pi matters, and fp16 loses that first
PERIODIC_OPS = frozenset({"sin", "cos"})
ACCUMULATOR_OPS = frozenset({"cumsum"})
#: the analysis transform of a periodic source: kept fp32 with its (DFT basis) weight
TRANSFORM_OPS = frozenset({"conv"})


def _is_float(var) -> bool:
    from coremltools.converters.mil.mil import types

    dtype = getattr(var, "dtype", None)
    return dtype is not None and types.is_float(dtype)


def phase_accumulator_ops(block) -> set[str]:
    """Names of the ops of ``block`` on a path from a float cumsum to a sin/cos (both included), and
    from those to the first convolution after them (:func:`source_transform_ops`)."""
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
    kept |= source_transform_ops(block, [op for op in block.operations
                                         if op.name in kept and op.op_type in PERIODIC_OPS])
    return kept


def source_transform_ops(block, periodic) -> set[str]:
    """Names of the ops on a path from one of the ``periodic`` ops' outputs to the first
    convolution after them (the convolution included, the periodic ops not)."""
    reaches: dict[int, bool] = {}

    def reaches_transform(op, depth: int = 0) -> bool:
        key = id(op)
        if key not in reaches:
            reaches[key] = False
            found = op.op_type in TRANSFORM_OPS
            if not found and depth < 64:
                found = any(reaches_transform(child, depth + 1)
                            for out in op.outputs if _is_float(out) for child in out.child_ops)
            reaches[key] = found
        return reaches[key]

    kept: set[str] = set()

    def collect(op) -> None:
        if op.name in kept or not reaches_transform(op):
            return
        kept.add(op.name)
        if op.op_type in TRANSFORM_OPS:
            return
        for out in op.outputs:
            for child in out.child_ops:
                collect(child)

    for op in periodic:
        for out in op.outputs:
            for child in out.child_ops:
                collect(child)
    return kept


def program_name(name: str) -> str:
    """``name`` as the saved program spells it: coremltools' name sanitizer replaces characters
    outside [A-Za-z0-9_] with ``_`` and prefixes names that start with a digit with ``var_``."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return f"var_{name}" if name[:1].isdigit() else name


def fp16_op_selector(report: dict | None = None, fp32_ops=()) -> Callable:
    """``op_selector(op) -> bool`` (True: compute in fp16) keeping phase accumulators and the ops
    named in ``fp32_ops`` in fp32. ``report`` (optional) receives ``{"fp32_ops": [names],
    "fp32_op_types": {type: count}, "named_fp32_ops_seen": [names of fp32_ops the program has]}``."""
    kept_by_block: dict[int, set[str]] = {}
    named = frozenset(fp32_ops)
    seen: set[str] = set()

    def select(op) -> bool:
        block = op.enclosing_block
        key = id(block)
        if key not in kept_by_block:
            kept_by_block[key] = phase_accumulator_ops(block)
            if report is not None:
                names = sorted(set(report.get("fp32_ops", [])) | kept_by_block[key])
                report["fp32_ops"] = names
        # the fp16 report names an op by its output (the program's name for it, less the
        # "_cast_fp16" suffix the fp16 pass appends), which is usually also the op's own name
        hits = named & {form for name in (op.name, *(out.name for out in op.outputs))
                        for form in (name, program_name(name))}
        keep = op.name in kept_by_block[key] or bool(hits)
        if hits:
            seen.update(hits)
            if report is not None:
                report["named_fp32_ops_seen"] = sorted(seen)
        if keep and report is not None:
            types = report.setdefault("fp32_op_types", {})
            types[op.op_type] = types.get(op.op_type, 0) + 1
        return not keep

    return select
