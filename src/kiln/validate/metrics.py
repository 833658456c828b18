"""Parity metrics between a reference output and a candidate output.

- ``max_abs``: max |y - r|; ``max_rel``: max |y - r| / max(|r|, 1e-3 · max |r|): relative to each
  element, but never to less than a thousandth of the output's peak, so the exact zeros a ReLU leaves
  do not divide a rounding error into 1e7 (an all-zero reference divides by ``tiny``)
- ``psnr_db``: 20 log10(max |r| / rmse) — the peers' metric (Apple and argmax require >= 35 dB); +inf
  (recorded as null) when the outputs are identical
- ``normalized_error``: ||y - r|| / ||r|| (0 = identical; unbounded)
- ``quality``: max(0, 1 - normalized_error), 1.0 = identical, 0 = no better than silence (the
  published convention of the seed and mobius)
- ``match``: numpy ``allclose`` with the component's atol/rtol, and PSNR >= the minimum where set;
  integer outputs (argmax ids, durations) are judged by ``agreement`` (fraction of equal elements)
  against ``min_agreement`` instead: a near-tie may flip an id without the model being wrong
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

TINY = 1e-12
#: ``max_rel``'s denominator is at least this fraction of the reference's peak |r|
REL_FLOOR = 1e-3


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    min_psnr_db: float | None = None
    min_agreement: float = 1.0


def _as64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def max_abs(ref, out) -> float:
    return float(np.max(np.abs(_as64(out) - _as64(ref)))) if np.size(ref) else 0.0


def max_rel(ref, out) -> float:
    r, y = _as64(ref), _as64(out)
    if not r.size:
        return 0.0
    floor = max(REL_FLOOR * float(np.max(np.abs(r))), TINY)
    return float(np.max(np.abs(y - r) / np.maximum(np.abs(r), floor)))


def psnr_db(ref, out) -> float:
    r, y = _as64(ref), _as64(out)
    rmse = math.sqrt(float(np.mean((y - r) ** 2))) if r.size else 0.0
    peak = float(np.max(np.abs(r))) if r.size else 0.0
    if rmse == 0.0:
        return math.inf
    if peak == 0.0 or not math.isfinite(rmse):   # no signal left (NaN or inf in the output)
        return -math.inf
    return 20.0 * math.log10(peak / rmse)


def normalized_error(ref, out) -> float:
    """||y - r|| / ||r||; +inf when the reference is all zeros and the candidate is not."""
    r, y = _as64(ref), _as64(out)
    norm = float(np.linalg.norm(r))
    diff = float(np.linalg.norm(y - r))
    if norm == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / norm


def quality(ref, out) -> float:
    """1 - normalized error, floored at 0; 0 for an output with NaN or inf (no usable signal)."""
    error = normalized_error(ref, out)
    return max(0.0, 1.0 - error) if math.isfinite(error) else 0.0


def agreement(ref, out) -> float:
    r, y = np.asarray(ref), np.asarray(out)
    return float(np.mean(r == y)) if r.size else 1.0


def finite_or_none(value: float) -> float | None:
    """JSON has no infinities or NaN: identical outputs have PSNR +inf, an output holding NaN has a
    NaN error; both are recorded as null (beside a ``problem`` naming why, where it is a fault)."""
    return value if math.isfinite(value) else None


def non_finite_problem(out) -> str | None:
    """The problem to record beside an output holding NaN or inf (its errors are then null), else None."""
    return None if np.all(np.isfinite(out)) else "non-finite values (NaN or inf) in the output"


def finite_tree(value: Any) -> Any:
    """``value`` (nested dicts/lists of a family's task metrics) with every NaN or infinite float
    as None, so a candidate that produced NaN is recorded, not a JSON error that loses the job."""
    if isinstance(value, float):
        return finite_or_none(value)
    if isinstance(value, dict):
        return {k: finite_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_tree(v) for v in value]
    return value


def compare(ref, out, tolerance: Tolerance) -> dict:
    """Every metric for one output, plus whether it is within ``tolerance``."""
    ref, out = np.asarray(ref), np.asarray(out)
    bounds = {"atol": tolerance.atol, "rtol": tolerance.rtol, "min_psnr_db": tolerance.min_psnr_db}
    if ref.shape != out.shape:
        return {"max_abs": None, "max_rel": None, "psnr_db": None, "quality": None, **bounds,
                "match": False, "problem": f"shape {list(out.shape)} != reference {list(ref.shape)}"}
    if np.issubdtype(ref.dtype, np.integer):
        agreed = agreement(ref, out)
        return {"max_abs": max_abs(ref, out), "max_rel": max_rel(ref, out), "psnr_db": None, "quality": None,
                **bounds, "agreement": agreed, "min_agreement": tolerance.min_agreement,
                "match": agreed >= tolerance.min_agreement}
    problem = non_finite_problem(out)
    finite = problem is None
    psnr = psnr_db(ref, out)
    close = finite and bool(np.allclose(_as64(out), _as64(ref), atol=tolerance.atol, rtol=tolerance.rtol))
    psnr_ok = tolerance.min_psnr_db is None or psnr >= tolerance.min_psnr_db
    result = {
        "max_abs": finite_or_none(max_abs(ref, out)),
        "max_rel": finite_or_none(max_rel(ref, out)),
        "psnr_db": finite_or_none(psnr),
        "quality": quality(ref, out),
        "normalized_error": finite_or_none(normalized_error(ref, out)),
        "atol": tolerance.atol,
        "rtol": tolerance.rtol,
        "min_psnr_db": tolerance.min_psnr_db,
        "match": close and psnr_ok,
    }
    if problem:
        result["problem"] = problem
    return result
