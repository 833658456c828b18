"""Kokoro's waveform comparison, shared by the faithfulness check (build) and the parity metric (judge)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def _valid_audio(step: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    return np.ravel(step["audio"])[:n]


def waveform_metrics(reference: list[dict], candidate: list[dict], facts_: Mapping[str, Any]) -> dict:
    """Per validation input: ``pred_dur`` equality, waveform correlation, log-mel distance, max
    abs error over the reference's valid samples, and whether the clamp flags agree."""
    from kiln.validate.audio import log_mel_distance, waveform_correlation

    rate = int(facts_["sample_rate"])
    cases = []
    for ref, got in zip(reference, candidate):
        n = int(np.ravel(ref["audio_length"])[0])
        a, b = _valid_audio(ref, n), _valid_audio(got, n)
        cases.append({
            "valid_samples": n,
            "valid_samples_equal": n == int(np.ravel(got["audio_length"])[0]),
            "pred_dur_equal": bool(np.array_equal(np.ravel(ref["pred_dur"]), np.ravel(got["pred_dur"]))),
            "pred_dur_agreement": float(np.mean(np.ravel(ref["pred_dur"]) == np.ravel(got["pred_dur"]))),
            "clamped": int(np.ravel(ref["clamped"])[0]),
            "clamped_equal": bool(np.array_equal(np.ravel(ref["clamped"]), np.ravel(got["clamped"]))),
            "correlation": waveform_correlation(a, b),
            "log_mel_distance_db": log_mel_distance(a, b, rate),
            "max_abs_error": float(np.max(np.abs(a - b))) if n else 0.0,
        })
    return {
        "cases": cases,
        "pred_dur_equal": all(c["pred_dur_equal"] for c in cases),
        "clamped_equal": all(c["clamped_equal"] for c in cases),
        "min_correlation": min(c["correlation"] for c in cases),
        "max_log_mel_distance_db": max(c["log_mel_distance_db"] for c in cases),
        "max_abs_error": max(c["max_abs_error"] for c in cases),
    }
