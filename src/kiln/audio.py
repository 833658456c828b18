"""Real test audio: speech synthesised with espeak-ng, mixed with silence and noise.

Parity checks need realistic inputs (a VAD fed only noise never leaves its idle state). espeak-ng
is a Debian package installed by ``make setup``; its 22,050 Hz output is resampled to the model rate.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np

from kiln.foundation.errors import KilnError

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Voice activity detection finds the parts of a recording that contain speech.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Core ML models run on the neural engine of iPhone and Mac.",
)


class AudioError(KilnError):
    """Test audio could not be synthesised or read."""


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] and the sample rate of a 16-bit PCM WAV file."""
    try:
        with wave.open(str(path), "rb") as wav:
            rate, width, channels = wav.getframerate(), wav.getsampwidth(), wav.getnchannels()
            frames = wav.readframes(wav.getnframes())
    except (OSError, wave.Error, EOFError) as exc:
        raise AudioError(f"{path}: not a readable WAV file: {exc}") from exc
    if width != 2:
        raise AudioError(f"{path}: expected 16-bit PCM, got {8 * width}-bit samples")
    samples = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return samples, rate


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return samples.astype(np.float32)
    from scipy.signal import resample_poly

    ratio = Fraction(rate_out, rate_in)
    return resample_poly(samples, ratio.numerator, ratio.denominator).astype(np.float32)


def espeak(text: str, rate: int = 16_000, voice: str = "en-us", words_per_minute: int = 160) -> np.ndarray:
    """``text`` spoken by espeak-ng, as float32 samples at ``rate``."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise AudioError("espeak-ng is not installed (make setup installs it: apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        result = subprocess.run([exe, "-v", voice, "-s", str(words_per_minute), "-w", str(out), text],
                                capture_output=True, text=True, timeout=60)
        if result.returncode != 0 or not out.exists():
            raise AudioError(f"espeak-ng failed ({result.returncode}): {result.stderr.strip()}")
        samples, native = read_wav(out)
    return resample(samples, native, rate)


def speech_mix(seconds: float, rate: int = 16_000, seed: int = 0, noise_db: float = -45.0) -> np.ndarray:
    """``seconds`` of audio alternating silence and spoken sentences, with low background noise.

    Deterministic for a given seed and espeak-ng version. Peak-normalised to 0.5 so no clipping.
    """
    rng = np.random.default_rng(seed)
    total = int(seconds * rate)
    out = np.zeros(total, dtype=np.float32)
    cursor = int(rng.uniform(0.3, 0.8) * rate)
    index = 0
    while cursor < total:
        speech = espeak(SENTENCES[index % len(SENTENCES)], rate)
        speech = 0.5 * speech / max(1e-6, float(np.abs(speech).max()))
        end = min(total, cursor + speech.size)
        out[cursor:end] += speech[: end - cursor]
        cursor = end + int(rng.uniform(0.5, 1.5) * rate)
        index += 1
    noise = rng.standard_normal(total).astype(np.float32) * np.float32(10 ** (noise_db / 20))
    return (out + noise).astype(np.float32)
