"""The fp16 report of one Core ML package: where its activations approach fp16's range and where
fp16 rounding error grows, measured op by op on the program itself.

kiln's executor runs the package's program twice in lockstep, one op per step (unfused plans):
the fp32 plan (every op computed in fp32) and the fp16 plan (every op the program declares fp16
rounded to half precision, as Core ML stores it). On a bounded sample of the component's
validation steps (the state inputs of a sampled step are the source's own, from the reference
job) it records per op:

- ``max_abs``: the largest finite |value| of the op's outputs in the fp32 plan. An op computed in
  fp16 whose ``max_abs`` exceeds 65504 overflows to inf on an Apple device; within a factor of
  :data:`RISK_FACTOR` of it, other inputs may get there (the op is *near* the range);
- ``error``: max |fp16 - fp32| / max |fp32| of its outputs, the fp16 plan fed its own previous
  values (so error accumulates as on a device), and ``added``: that error minus the largest error
  among the op's inputs (how much this op adds; fp16 rounding alone adds up to 2^-11).

An fp16 op that overflows fails the build (:class:`Fp16OverflowError`, the op named, with the
remedy: the component's ``export.fp32_ops``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import numpy as np

from kiln.foundation.errors import KilnError

FP16_MAX = 65504.0
#: an op is reported as near fp16's range when its fp32 activations reach FP16_MAX / RISK_FACTOR
RISK_FACTOR = 4.0
#: validation steps sampled per component (evenly spaced, first and last included)
MAX_STEPS = 3
#: ops listed per ranking in the report
TOP = 10


class Fp16OverflowError(KilnError):
    """An op the package computes in fp16 produces values beyond fp16's range on validation inputs."""


#: what coremltools' fp16 pass appends to the output name of each op it casts to fp16
FP16_SUFFIX = "_cast_fp16"


def config_name(node: str) -> str:
    """The name ``export.fp32_ops`` takes for the op producing ``node``: its output's name before
    the fp16 pass renamed it (kept in fp32, the op keeps that name)."""
    return node.removesuffix(FP16_SUFFIX)


def sample_steps(count: int, limit: int = MAX_STEPS) -> list[int]:
    """``limit`` step indices of ``count``, evenly spaced, the first and the last included."""
    if count <= limit:
        return list(range(count))
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, limit)})


def step_inputs(spec, component, reference, step: int) -> dict[str, np.ndarray]:
    """The complete inputs of validation step ``step``: its feeds and, for the state inputs, the
    initial state (step 0) or the source's own state outputs of the step before."""
    state = dict(reference.initial)
    if step > 0:
        shapes = {t.name: t for t in component.inputs}
        before = reference.outputs[step - 1]
        for pair in spec.state:
            value = np.asarray(before[pair.output])
            if pair.input in shapes:
                value = value.astype(shapes[pair.input].dtype).reshape(shapes[pair.input].shape)
            state[pair.input] = value
    return {**reference.feeds[step], **state}


def _is_float(value) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.size > 0


#: elements per chunk of the difference in :func:`_max_abs_diff` (cache-resident buffers, not
#: float64 copies of a 40 MB activation)
DIFF_CHUNK = 1 << 16
#: a float32 |b - a| within this factor of the chunk's largest may be the largest in float64: each
#: float32 difference is the exact one within 2^-24 relative, so the float64 maximum is among them
CANDIDATE_FACTOR = 1.0 - 2.0 ** -20
#: below this the float32 differences may be subnormal (absolute, not relative, rounding): such a
#: chunk is taken in float64 whole
TINY = 2.0 ** -100


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |b - a| of two flat, finite float32 arrays, the difference taken in float64 (exactly
    ``np.max(np.abs(b.astype(float64) - a.astype(float64)))``), chunk by chunk: the difference in
    float32 first (half the bytes), then in float64 only the elements that may be the largest."""
    buffer = np.empty(min(a.size, DIFF_CHUNK), np.float32)
    wide = None
    worst = 0.0
    for start in range(0, a.size, DIFF_CHUNK):
        part = buffer[:min(DIFF_CHUNK, a.size - start)]
        pa, pb = a[start:start + DIFF_CHUNK], b[start:start + DIFF_CHUNK]
        np.subtract(pb, pa, out=part)
        largest = float(np.max(np.abs(part, out=part)))
        if largest == 0.0:   # (float32 x - y is 0 only when x == y: gradual underflow)
            continue
        if largest < TINY or not math.isfinite(largest):   # subnormal rounding, or float32 overflow
            if wide is None:
                wide = np.empty(buffer.size, np.float64)
            whole = wide[:part.size]
            np.subtract(pb, pa, out=whole, dtype=np.float64)
            worst = max(worst, float(np.max(np.abs(whole, out=whole))))
            continue
        if largest * (1.0 + 2.0 ** -20) < worst:
            continue   # every float64 difference here is within 2^-23 of its float32 one: none beats worst
        where = np.flatnonzero(part >= largest * CANDIDATE_FACTOR)
        exact = np.abs(pb[where].astype(np.float64) - pa[where].astype(np.float64))
        worst = max(worst, float(np.max(exact)))
    return worst


def _compare(a: np.ndarray, b: np.ndarray) -> tuple[bool, float | None, float | None]:
    """(whether ``a`` has a non-finite element, max |a| over its finite elements or None when it
    has none, :func:`_relative_error` of ``b``) in one pass over the common all-finite case.

    Finiteness and max |a| come from the minimum and maximum (NaN and inf propagate through both),
    with no temporary array."""
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    low, high = float(np.min(flat_a)), float(np.max(flat_a))
    if math.isfinite(low) and math.isfinite(high):
        scale = max(abs(low), abs(high))
        if not (math.isfinite(float(np.min(flat_b))) and math.isfinite(float(np.max(flat_b)))):
            return False, scale, None
        diff = _max_abs_diff(flat_a, flat_b)
        return False, scale, 0.0 if diff == 0.0 else (diff / scale if scale > 0 else diff)
    finite = np.isfinite(a)
    return True, (float(np.max(np.abs(a[finite]))) if finite.any() else None), _relative_error(a, b)


def _relative_error(a: np.ndarray, b: np.ndarray) -> float | None:
    """max |b - a| / max |a| over the finite elements of ``a``; None when b is not finite where a is."""
    finite = np.isfinite(a)
    if not finite.any():
        return 0.0
    if not np.isfinite(b[finite]).all():
        return None
    a64, b64 = a[finite].astype(np.float64), b[finite].astype(np.float64)
    scale = float(np.max(np.abs(a64)))
    diff = float(np.max(np.abs(b64 - a64)))
    return 0.0 if diff == 0.0 else (diff / scale if scale > 0 else diff)


def measure(artifact: Path, inputs_per_step: list[Mapping[str, np.ndarray]]) -> list[dict]:
    """Per op of the package's main function (program order): type, name, declared dtype, and its
    fp32 ``max_abs``, ``error``, ``added`` (worst over the steps; see the module doc)."""
    from kiln.mil import load_model

    model = load_model(artifact)
    plan32 = model.plan("fp32", fuse=False)
    plan16 = model.plan("fp16", fuse=False)
    ops: dict[str, dict] = {}
    producers: dict[int, str] = {}      # slot -> name of the op that wrote it
    for inputs in inputs_per_step:
        errors: dict[int, float] = {}   # slot -> relative error of its value (inputs, constants: 0)
        for (op, node, outs32, reads), (_, node16, outs16, _) in zip(plan32.step_outputs(inputs),
                                                                     plan16.step_outputs(inputs)):
            if node != node16:   # one program, two precisions: the same steps in the same order
                raise KilnError(f"{artifact}: fp32 and fp16 plans differ at op '{node}' / '{node16}'")
            floats = [(slot, a, b, ttype) for (slot, a, ttype), (_, b, _) in zip(outs32, outs16)
                      if _is_float(a) and _is_float(b) and a.shape == b.shape]
            for slot, *_ in outs32:
                producers[slot] = config_name(node)
            if not floats:
                continue
            entry = ops.setdefault(node, {"op": op, "name": config_name(node), "dtype": _dtype(floats[0][3]),
                                          "max_abs": 0.0, "fp32_nonfinite": False, "error": 0.0,
                                          "added": 0.0, "fp16_nonfinite": False, "reads": set()})
            entry["reads"].update(producers[slot] for slot in reads if slot in producers)
            worst_in = max((errors.get(slot, 0.0) for slot in reads), default=0.0)
            for slot, a, b, _ in floats:
                nonfinite, largest, err = _compare(a, b)
                if nonfinite:
                    entry["fp32_nonfinite"] = True
                if largest is not None:
                    entry["max_abs"] = max(entry["max_abs"], largest)
                if err is None:
                    entry["fp16_nonfinite"] = True
                    errors[slot] = math.inf
                    continue
                errors[slot] = err
                entry["error"] = max(entry["error"], err)
                if math.isfinite(worst_in) and math.isfinite(err):
                    entry["added"] = max(entry["added"], err - worst_in)
    readers: dict[str, list[str]] = {}
    for entry in ops.values():
        for name in sorted(entry.pop("reads")):
            readers.setdefault(name, []).append(entry["name"])
    for entry in ops.values():
        entry["readers"] = readers.get(entry["name"], [])
    return list(ops.values())


def _dtype(ttype) -> str | None:
    return None if ttype is None else ttype.dtype.name


def summarise(ops: list[dict], steps: list[int], compute_precision: str, fp32_ops=()) -> dict:
    """The report recorded in metadata.json: the ops near or beyond fp16's range (fp32 ``max_abs``
    >= 65504 / 4, largest first) and the ops adding the most fp16 error, with the totals."""
    threshold = FP16_MAX / RISK_FACTOR
    near = sorted((o for o in ops if o["max_abs"] >= threshold), key=lambda o: -o["max_abs"])
    growth = sorted((o for o in ops if o["added"] > 0), key=lambda o: -o["added"])
    fields = ("op", "name", "dtype", "max_abs", "error", "added")

    def row(o: dict) -> dict:
        out = {k: _round(o[k]) for k in fields}
        out["overflows"] = o["max_abs"] > FP16_MAX
        return out

    return {
        "compute_precision": compute_precision,
        "steps": steps,
        "ops": len(ops),
        "fp16_ops": sum(1 for o in ops if o["dtype"] == "fp16"),
        "fp32_fallback_ops": list(fp32_ops),
        "fp16_max": FP16_MAX,
        "risk_threshold": threshold,
        "max_abs": _round(max((o["max_abs"] for o in ops), default=0.0)),
        "max_error": _round(max((o["error"] for o in ops), default=0.0)),
        "near_range": [row(o) for o in near[:TOP]],
        "near_range_count": len(near),
        "overflows": [row(o) for o in near if o["dtype"] == "fp16" and o["max_abs"] > FP16_MAX],
        # the export.fp32_ops that would keep every overflowing op in fp32: the ones configured, the
        # overflowing ops, and for a cast to fp16 (an fp32 op's value entering fp16) the ops reading it
        "suggested_fp32_ops": _suggestion(near, fp32_ops),
        "error_growth": [row(o) for o in growth[:TOP]],
        "fp16_nonfinite": [o["name"] for o in ops if o["fp16_nonfinite"] and not o["fp32_nonfinite"]][:TOP],
    }


def _suggestion(near: list[dict], fp32_ops) -> list[str]:
    names = list(fp32_ops)
    for o in near:
        if o["dtype"] != "fp16" or o["max_abs"] <= FP16_MAX:
            continue
        for name in (o.get("readers", []) if o["op"] == "cast" else [o["name"]]):
            if name not in names:
                names.append(name)
    return names if len(names) > len(fp32_ops) else []


def _round(value):
    return float(f"{value:.4g}") if isinstance(value, float) and math.isfinite(value) else value


def check_overflow(where: str, report: dict) -> None:
    """Raise :class:`Fp16OverflowError` naming the first op the package computes in fp16 whose
    fp32 activations exceed fp16's maximum."""
    if not report["overflows"]:
        return
    worst = report["overflows"][0]
    others = len(report["overflows"]) - 1
    cast = " (the cast of an fp32 op's value into fp16: the ops reading it must stay fp32 too)" \
        if worst["op"] == "cast" else ""
    suggestion = ", ".join(report.get("suggested_fp32_ops") or [worst["name"]])
    raise Fp16OverflowError(
        f"{where}: fp16 overflow: op '{worst['name']}' ({worst['op']}) reaches |x| = {worst['max_abs']:.6g} "
        f"> {FP16_MAX:g} on the validation inputs" + (f" (and {others} more op(s))" if others else "") + cast
        + f"; keep them in fp32 with export.fp32_ops: [{suggestion}] or export the component in float32")


def fp16_report(artifact: Path, spec, component, reference) -> tuple[dict, list[dict]]:
    """(the report, every op's measurements) of ``artifact`` on a sample of ``reference``'s steps."""
    steps = sample_steps(reference.steps)
    ops = measure(artifact, [step_inputs(spec, component, reference, k) for k in steps])
    return summarise(ops, steps, component.export.compute_precision, component.export.fp32_ops), ops
