"""Silero VAD's judging part: the decision metric and the probability plot."""

from __future__ import annotations

import numpy as np


def probabilities(steps: list) -> np.ndarray:
    return np.array([float(np.ravel(s["vad_output"])[0]) for s in steps])


def decisions(reference: list, candidate: list, facts) -> dict:
    p_ref, p_out = probabilities(reference), probabilities(candidate)
    return {
        "windows": int(p_ref.size),
        "decision_threshold": 0.5,
        "decision_agreement": float(np.mean((p_ref > 0.5) == (p_out > 0.5))),
        "speech_fraction_reference": float(np.mean(p_ref > 0.5)),
        "max_abs_probability_error": float(np.max(np.abs(p_ref - p_out))),
    }
