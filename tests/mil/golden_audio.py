"""Deterministic speech-like test audio at 16 kHz: voiced segments (a glottal pulse train through
formant resonators, with pitch and formant glides) separated by silence and noise."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

SR = 16000


def _resonate(signal, freq, bandwidth, sr=SR):
    r = np.exp(-np.pi * bandwidth / sr)
    a1, a2 = -2 * r * np.cos(2 * np.pi * freq / sr), r * r
    out = np.zeros_like(signal)
    y1 = y2 = 0.0
    for i, s in enumerate(signal):
        y = s - a1 * y1 - a2 * y2
        out[i] = y
        y2, y1 = y1, y
    return out


def synthetic_speech(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    audio = rng.normal(0, 0.003, n)  # room noise
    pos = int(0.3 * SR)
    while pos < n - SR // 2:
        length = int(rng.uniform(0.4, 1.2) * SR)
        length = min(length, n - pos)
        t = np.arange(length) / SR
        f0 = rng.uniform(95, 220) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
        phase = np.cumsum(f0 / SR)
        pulses = (np.diff(np.floor(phase), prepend=0) > 0).astype(float)
        voiced = pulses
        for formant, bw in ((rng.uniform(300, 800), 80), (rng.uniform(900, 2200), 120), (2600, 200)):
            voiced = voiced + 0.5 * _resonate(pulses, formant, bw)
        envelope = np.sin(np.pi * np.arange(length) / length) ** 0.5
        syllables = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(3, 6) * t) ** 2
        segment = voiced * envelope * syllables
        audio[pos:pos + length] += 0.3 * segment / (np.abs(segment).max() + 1e-9)
        pos += length + int(rng.uniform(0.3, 1.0) * SR)
    if rng.random() < 1:  # a burst of broadband noise (not speech)
        start = n // 2
        audio[start:start + SR // 4] += rng.normal(0, 0.05, min(SR // 4, n - start))
    return np.clip(audio, -1, 1).astype(np.float32)


def espeak_speech(text: str) -> np.ndarray | None:
    """espeak-ng speech resampled to 16 kHz, or None when espeak-ng is not installed."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = Path(tmp) / "speech.wav"
        subprocess.run([exe, "-w", str(wav_path), text], check=True, capture_output=True)
        with wave.open(str(wav_path)) as handle:
            rate = handle.getframerate()
            frames = np.frombuffer(handle.readframes(handle.getnframes()), np.int16).astype(np.float32) / 32768
    duration = frames.size / rate
    target = np.arange(int(duration * SR)) / SR
    return np.interp(target, np.arange(frames.size) / rate, frames).astype(np.float32)


def vad_audio(seconds: float = 8.0) -> np.ndarray:
    """Speech (espeak-ng when available, else synthetic) mixed with silence and noise."""
    rng = np.random.default_rng(1)
    base = synthetic_speech(seconds)
    speech = espeak_speech("The quick brown fox jumps over the lazy dog. Voice activity detection on Linux.")
    if speech is not None:
        start = int(1.0 * SR)
        end = min(base.size, start + speech.size)
        base[start:end] += 0.8 * speech[: end - start]
    base += rng.normal(0, 0.002, base.size).astype(np.float32)
    return np.clip(base, -1, 1).astype(np.float32)
