"""Parakeet TDT's judging part: per-component metrics and plots, and the decoding task's comparison."""

from __future__ import annotations

from typing import Callable

import numpy as np

from kiln.models._tdt import agreement


def _flat(steps: list, name: str) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(s[name])) for s in steps])


def decision_metrics(reference: list, candidate: list, facts) -> dict:
    ref_tok, out_tok = _flat(reference, "token_id"), _flat(candidate, "token_id")
    return {"decisions": int(ref_tok.size),
            "token_agreement": float(np.mean(ref_tok == out_tok)),
            "duration_agreement": float(np.mean(_flat(reference, "duration") == _flat(candidate, "duration"))),
            "blank_fraction_reference": float(np.mean(ref_tok == facts["blank_id"]))}


def joint_argmax_metrics(reference: list, candidate: list, facts) -> dict:
    n_dur = len(facts["durations"])
    ref = np.stack([np.ravel(s["logits"]) for s in reference])
    out = np.stack([np.ravel(s["logits"]) for s in candidate]).astype(np.float32)
    return {"steps": int(ref.shape[0]),
            "token_argmax_agreement": float(np.mean(ref[:, :-n_dur].argmax(1) == out[:, :-n_dur].argmax(1))),
            "duration_argmax_agreement": float(np.mean(ref[:, -n_dur:].argmax(1) == out[:, -n_dur:].argmax(1)))}


def similarity(output: str, length: str) -> Callable:
    def metric(reference: list, candidate: list, facts) -> dict:
        ref = np.ravel(reference[0][output]).astype(np.float64)
        out = np.ravel(candidate[0][output]).astype(np.float64)
        denom = np.linalg.norm(ref) * np.linalg.norm(out)
        return {"cosine_similarity": float(ref @ out / denom) if denom else None,
                "length_equal": bool(np.array_equal(np.ravel(reference[0][length]),
                                                    np.ravel(candidate[0][length])))}
    return metric


def decoder_metrics(reference: list, candidate: list, facts) -> dict:
    ref = np.stack([np.ravel(s["decoder"]) for s in reference])
    out = np.stack([np.ravel(s["decoder"]) for s in candidate]).astype(np.float32)
    return {"steps": int(ref.shape[0]), "max_abs_decoder_error": float(np.max(np.abs(ref - out)))}


def compare_task(reference: dict, result: dict) -> dict:
    return {"vs_torch_cpu": agreement(reference["tokens"], result["tokens"]),
            "durations_vs_torch_cpu": agreement(reference["durations"], result["durations"])}


def decoder_norms(steps: list) -> np.ndarray:
    return np.array([float(np.linalg.norm(s["decoder"])) for s in steps])


def max_logits(steps: list) -> np.ndarray:
    return np.array([float(np.max(s["logits"])) for s in steps])


def token_probs(steps: list) -> np.ndarray:
    return np.array([float(np.ravel(s["token_prob"])[0]) for s in steps])
