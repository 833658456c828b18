"""Silero VAD's validation inputs (the reference job): speech windows streamed as an app does."""

from __future__ import annotations

import numpy as np

from kiln.family.spec import Context, Feeds
from kiln.models.silero_vad.contract import CHUNK_SAMPLES, CONTEXT_SAMPLES, SAMPLE_RATE, steps_of


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
