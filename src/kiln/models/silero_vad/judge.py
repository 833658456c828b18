"""Silero VAD's judging part: the validation feeds (speech windows streamed as an app does), the
decision metric and the probability plot."""

from __future__ import annotations

import numpy as np

from kiln.family.spec import Context, Feeds
from kiln.models.silero_vad.build import CHUNK_SAMPLES, CONTEXT_SAMPLES, SAMPLE_RATE, steps_of

#: seconds of validation speech (espeak-ng mixed with silence and noise)
VALIDATION_SECONDS = 20.0


def speech_windows(ctx: Context, component) -> Feeds:
    """20 s of speech cut into windows as an app does: each window is the previous window's last 64
    samples (zeros at first) followed by ``steps * 512`` new samples."""
    hop = steps_of(component) * CHUNK_SAMPLES
    audio = ctx.memo("speech", lambda: ctx.speech(VALIDATION_SECONDS, rate=SAMPLE_RATE))
    context = np.zeros((1, CONTEXT_SAMPLES), dtype=np.float32)
    steps = []
    for start in range(0, audio.size - hop + 1, hop):
        chunk = np.concatenate([context, audio[None, start:start + hop]], axis=1).astype(np.float32)
        steps.append({"audio_input": chunk})
        context = chunk[:, -CONTEXT_SAMPLES:]
    return Feeds(steps, f"espeak-ng speech mixed with silence and noise, {VALIDATION_SECONDS:.1f} s at "
                        f"{SAMPLE_RATE} Hz, streamed with state carried", step_seconds=hop / SAMPLE_RATE)


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
