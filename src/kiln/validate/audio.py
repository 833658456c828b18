"""Generic audio-output parity: waveform correlation, log-mel spectral distance, a WAV writer and
a waveform + spectrogram comparison plot (for models whose output is a waveform, e.g. TTS)."""

from __future__ import annotations

import math
import wave
from functools import lru_cache
from pathlib import Path

import numpy as np

from kiln.foundation.fsutil import atomic_file

#: floor added to mel power before the log, relative to a full-scale sine's power
LOG_MEL_FLOOR = 1e-10


def waveform_correlation(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Pearson correlation of two equally long waveforms (1.0 identical shape; 0.0 for a constant
    one, where correlation is undefined, unless both are equal)."""
    a = np.asarray(reference, dtype=np.float64).ravel()
    b = np.asarray(candidate, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"waveform_correlation: lengths differ ({a.size} vs {b.size})")
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    if denom == 0.0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(a @ b) / denom


def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


@lru_cache(maxsize=8)
def mel_filterbank(rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """HTK-style triangular mel filters ``[n_mels, n_fft//2 + 1]`` from 0 Hz to Nyquist."""
    edges_mel = np.linspace(_hz_to_mel(0.0), _hz_to_mel(rate / 2), n_mels + 2)
    edges_hz = 700.0 * (10 ** (edges_mel / 2595.0) - 1.0)
    freqs = np.linspace(0.0, rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (freqs - lower) / np.maximum(centre - lower, 1e-9)
    falling = (upper - freqs) / np.maximum(upper - centre, 1e-9)
    return np.maximum(0.0, np.minimum(rising, falling))


def log_mel(samples: np.ndarray, rate: int, n_fft: int = 1024, hop: int = 256, n_mels: int = 80) -> np.ndarray:
    """``10 log10`` mel power ``[n_mels, frames]`` (Hann window, zero-padded to at least one frame)."""
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    frames = 1 + (x.size - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spectrum = np.fft.rfft(x[index] * np.hanning(n_fft + 1)[:-1], axis=1)
    power = (spectrum.real ** 2 + spectrum.imag ** 2).T
    return 10.0 * np.log10(mel_filterbank(rate, n_fft, n_mels) @ power + LOG_MEL_FLOOR)


def log_mel_distance(reference: np.ndarray, candidate: np.ndarray, rate: int) -> float:
    """Root-mean-square difference of the two log-mel spectrograms, in dB (0 for identical audio)."""
    a, b = log_mel(reference, rate), log_mel(candidate, rate)
    return float(np.sqrt(np.mean((a - b) ** 2)))


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> Path:
    """Mono 16-bit PCM WAV (clipped to [-1, 1]), written atomically."""
    pcm = np.round(np.clip(np.asarray(samples, dtype=np.float64).ravel(), -1.0, 1.0) * 32767.0).astype("<i2")
    path = Path(path)
    with atomic_file(path, "wb") as handle:
        with wave.open(handle, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(int(rate))
            wav.writeframes(pcm.tobytes())
    return path


def waveform_plot(path: str | Path, title: str, rate: int, waveforms: dict[str, np.ndarray]) -> Path:
    """One row per waveform (first = reference): the waveform, and its log-mel spectrogram beside
    it; a last row shows the absolute difference of every other waveform from the first."""
    from kiln.validate.plots import _pyplot, _save

    plt = _pyplot()
    names = list(waveforms)
    fig, axes = plt.subplots(len(names) + 1, 2, figsize=(12, 2.2 * (len(names) + 1)), squeeze=False)
    reference = np.asarray(waveforms[names[0]], dtype=np.float64).ravel()
    t = np.arange(reference.size) / rate
    for row, name in enumerate(names):
        y = np.asarray(waveforms[name], dtype=np.float64).ravel()
        axes[row, 0].plot(t, y, linewidth=0.5)
        axes[row, 0].set_ylabel(name, fontsize=8)
        axes[row, 1].imshow(log_mel(y, rate), origin="lower", aspect="auto", cmap="magma")
    for name in names[1:]:
        diff = np.abs(np.asarray(waveforms[name], dtype=np.float64).ravel() - reference)
        axes[-1, 0].semilogy(t, np.maximum(diff, 1e-9), linewidth=0.5, label=name)
    axes[-1, 0].set_ylabel("|difference|", fontsize=8)
    axes[-1, 0].set_xlabel("time (s)")
    axes[-1, 0].legend(fontsize=7)
    axes[-1, 1].axis("off")
    axes[0, 0].set_title(title)
    axes[0, 1].set_title("log-mel spectrogram (dB)")
    path = Path(path)
    _save(fig, path)
    plt.close(fig)
    return path
