"""Generic waveform parity helpers: correlation, log-mel distance, the WAV writer, the plot."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.audio import read_wav
from kiln.validate.audio import log_mel_distance, waveform_correlation, waveform_plot, write_wav


def _tone(rate=24_000, seconds=0.5, freq=440.0):
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_correlation_and_log_mel_distance():
    x = _tone()
    assert waveform_correlation(x, x) == pytest.approx(1.0)
    assert waveform_correlation(x, -x) == pytest.approx(-1.0)
    assert waveform_correlation(x, 3 * x + 0.1) == pytest.approx(1.0)
    assert log_mel_distance(x, x, 24_000) == 0.0
    noisy = x + 0.05 * np.random.default_rng(0).standard_normal(x.size).astype(np.float32)
    assert 0.0 < log_mel_distance(x, x * 1.001, 24_000) < 0.02   # 0.0087 dB where above the floor
    assert log_mel_distance(x, noisy, 24_000) > 10.0 and log_mel_distance(x, _tone(freq=3000.0), 24_000) > 10.0
    with pytest.raises(ValueError, match="lengths differ"):
        waveform_correlation(x, x[:-1])


def test_wav_round_trip_and_plot(tmp_path):
    x = _tone()
    path = write_wav(tmp_path / "a.wav", x, 24_000)
    back, rate = read_wav(path)
    assert rate == 24_000 and np.max(np.abs(back - x)) <= 1 / 32767
    png = waveform_plot(tmp_path / "p.png", "tone", 24_000, {"torch": x, "kiln": x * 0.99})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
