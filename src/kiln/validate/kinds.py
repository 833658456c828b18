"""Judgement by output kind: what an output *is* picks the metrics that judge it and its score.

An output in config.yaml may declare ``kind`` (``probability``, ``logits``, ``ids``, ``embedding``,
``audio``, ``state``, ``features``). The parity job records the kind's metrics beside the generic ones
(max |diff|, PSNR, ...) and the quantize job scores a variant by the kind's ``score`` (0..1, 1 = the
float output), instead of ``1 - ||d|| / ||y||``, which misjudges e.g. unit vectors (int8 at a mean
cosine of 0.989 read as quality 0.852) and ids (an L2 of id differences means nothing).

Outputs are stacked over the validation steps (``[steps, *shape]``). Each kind is one
:class:`OutputKind` in :data:`OUTPUT_KINDS`; a family keeps its own task metrics beside these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from kiln.validate.metrics import agreement, finite_or_none, normalized_error, psnr_db, quality

DECISION_THRESHOLD = 0.5


@dataclass(frozen=True)
class OutputKind:
    name: str
    description: str
    #: (reference, candidate) -> JSON-able metrics (None for non-finite numbers)
    metrics: Callable[[np.ndarray, np.ndarray], dict]
    #: (reference, candidate) -> the quantization score in [0, 1] (1 = equal to the float output)
    score: Callable[[np.ndarray, np.ndarray], float]
    #: what ``score`` is, for the summary
    score_name: str


def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _clip01(value: float) -> float:
    return float(min(1.0, max(0.0, value))) if math.isfinite(value) else 0.0


# -- probability ---------------------------------------------------------------------------------------

def decision_agreement(ref, out, threshold: float = DECISION_THRESHOLD) -> float:
    r, y = _f64(ref), _f64(out)
    return float(np.mean((r > threshold) == (y > threshold))) if r.size else 1.0


def probability_metrics(ref, out) -> dict:
    r, y = _f64(ref), _f64(out)
    return {"decision_threshold": DECISION_THRESHOLD, "decision_agreement": decision_agreement(r, y),
            "positive_fraction_reference": float(np.mean(r > DECISION_THRESHOLD)) if r.size else 0.0,
            "max_abs_probability_error": finite_or_none(float(np.max(np.abs(y - r)))) if r.size else 0.0}


# -- logits ----------------------------------------------------------------------------------------------

def top1_agreement(ref, out) -> float:
    """Fraction of positions (all axes but the last) whose argmax over the last axis is equal."""
    r, y = _f64(ref), _f64(out)
    if not r.size:
        return 1.0
    if not np.all(np.isfinite(y)):   # a NaN logit is a broken output, whatever its argmax
        return 0.0
    return float(np.mean(np.argmax(r, axis=-1) == np.argmax(y, axis=-1)))


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=-1, keepdims=True)


def logits_metrics(ref, out) -> dict:
    r, y = _f64(ref), _f64(out)
    finite = bool(np.all(np.isfinite(y)))
    kl = None
    if finite and r.size:
        p, q = _softmax(r), _softmax(y)
        kl = float(np.max(np.sum(p * (np.log(np.maximum(p, 1e-30)) - np.log(np.maximum(q, 1e-30))), axis=-1)))
    return {"top1_agreement": top1_agreement(r, y), "max_kl_divergence": kl}


# -- ids ---------------------------------------------------------------------------------------------------

def ids_metrics(ref, out) -> dict:
    return {"agreement": agreement(ref, out)}


# -- embedding ---------------------------------------------------------------------------------------------

def _vectors(x) -> np.ndarray:
    """Every embedding vector (the last axis) as a row."""
    a = _f64(x)
    return a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)


def cosines(ref, out) -> np.ndarray:
    """Cosine similarity of each candidate vector with its reference vector (1 where both are zero)."""
    r, y = _vectors(ref), _vectors(out)
    nr, ny = np.linalg.norm(r, axis=1), np.linalg.norm(y, axis=1)
    dot = np.sum(r * y, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dot / (nr * ny)
    both_zero = (nr == 0) & (ny == 0)
    return np.where(both_zero, 1.0, np.where((nr == 0) | (ny == 0), 0.0, cos))


def similarity_matrix_error(ref, out) -> float:
    """max |S_y - S_r| over the cosine-similarity matrices of all vectors: what retrieval and
    clustering see (two embeddings may each be close yet their similarity shift)."""
    def sim(x):
        v = _vectors(x)
        n = np.linalg.norm(v, axis=1, keepdims=True)
        v = v / np.where(n == 0, 1.0, n)
        return v @ v.T
    return float(np.max(np.abs(sim(out) - sim(ref)))) if _vectors(ref).shape[0] else 0.0


def embedding_metrics(ref, out) -> dict:
    if not np.all(np.isfinite(out)):
        return {"mean_cosine": None, "min_cosine": None, "similarity_matrix_error": None}
    cos = cosines(ref, out)
    return {"mean_cosine": float(np.mean(cos)), "min_cosine": float(np.min(cos)),
            "similarity_matrix_error": similarity_matrix_error(ref, out)}


def embedding_score(ref, out) -> float:
    return _clip01(float(np.mean(cosines(ref, out)))) if np.all(np.isfinite(out)) else 0.0


# -- audio -------------------------------------------------------------------------------------------------

def correlation(ref, out) -> float:
    """Pearson correlation of the flattened waveforms (1 for two identical constant signals)."""
    r, y = _f64(ref).ravel(), _f64(out).ravel()
    if not r.size or not np.all(np.isfinite(y)):
        return 0.0
    r, y = r - r.mean(), y - y.mean()
    nr, ny = np.linalg.norm(r), np.linalg.norm(y)
    if nr == 0 or ny == 0:
        return 1.0 if nr == ny else 0.0
    return float(np.dot(r, y) / (nr * ny))


def audio_metrics(ref, out) -> dict:
    return {"correlation": correlation(ref, out), "psnr_db": finite_or_none(psnr_db(ref, out))}


# -- state -------------------------------------------------------------------------------------------------

def per_step_errors(ref, out) -> np.ndarray:
    """||y_t - r_t|| / ||r_t|| per step (the leading axis): a carried state drifts step by step."""
    r, y = _f64(ref), _f64(out)
    if r.ndim == 0 or not r.size:
        return np.zeros(0)
    return np.array([normalized_error(r[t], y[t]) for t in range(r.shape[0])])


def state_metrics(ref, out) -> dict:
    errors = per_step_errors(ref, out)
    if not errors.size:
        return {"steps": 0, "mean_step_error": 0.0, "max_step_error": 0.0, "last_step_error": 0.0}
    return {"steps": int(errors.size), "mean_step_error": finite_or_none(float(np.mean(errors))),
            "max_step_error": finite_or_none(float(np.max(errors))),
            "last_step_error": finite_or_none(float(errors[-1]))}


def state_score(ref, out) -> float:
    errors = per_step_errors(ref, out)
    return _clip01(1.0 - float(np.mean(errors))) if errors.size else 1.0


OUTPUT_KINDS: dict[str, OutputKind] = {k.name: k for k in (
    OutputKind("probability", "values in [0, 1] thresholded into decisions (at 0.5)",
               probability_metrics, decision_agreement, "decision agreement at 0.5"),
    OutputKind("logits", "unnormalised scores over the last axis; what matters is the argmax",
               logits_metrics, lambda r, y: top1_agreement(r, y), "top-1 agreement over the last axis"),
    OutputKind("ids", "integer ids or labels: equal or not", ids_metrics, agreement, "fraction of equal ids"),
    OutputKind("embedding", "vectors compared by direction (the last axis)",
               embedding_metrics, embedding_score, "mean cosine similarity"),
    OutputKind("audio", "a waveform", audio_metrics, lambda r, y: _clip01(correlation(r, y)),
               "correlation with the float waveform"),
    OutputKind("state", "a recurrent state carried to the next step",
               state_metrics, state_score, "1 - mean per-step normalised error"),
    OutputKind("features", "any other tensor (the generic metrics)", lambda r, y: {}, quality,
               "1 - normalised error"),
)}


def output_kind(name: str) -> OutputKind:
    from kiln.foundation.errors import ContractError

    try:
        return OUTPUT_KINDS[name]
    except KeyError:
        raise ContractError(f"unknown output kind '{name}' (known: {', '.join(OUTPUT_KINDS)})") from None


def kind_metrics(kind: str, ref, out) -> dict:
    """``{"kind": kind, **its metrics}`` for one output stacked over the steps."""
    return {"kind": kind, **output_kind(kind).metrics(np.asarray(ref), np.asarray(out))}


def kind_score(kind: str, ref, out) -> float:
    return _clip01(output_kind(kind).score(np.asarray(ref), np.asarray(out)))
