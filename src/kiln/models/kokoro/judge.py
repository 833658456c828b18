"""Kokoro's judging part: the waveform metric (:mod:`kiln.models.kokoro.waveform`, shared with the
faithfulness check), the RMS plot and the audio artifacts (WAVs and waveform + spectrogram plots)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from kiln.models.kokoro.waveform import _valid_audio, waveform_metrics  # noqa: F401  (the family's metric)


def audio_rms(steps: list[dict]) -> np.ndarray:
    """RMS of each input's valid audio (one value per validation input)."""
    out = []
    for step in steps:
        a = _valid_audio(step, int(np.ravel(step["audio_length"])[0])).astype(np.float64)
        out.append(float(np.sqrt(np.mean(a * a))) if a.size else 0.0)
    return np.array(out)


def write_audio_artifacts(out_dir: str | Path, label: str, facts_: Mapping[str, Any],
                          reference: list[dict], candidates: Mapping[str, list[dict]]) -> list[Path]:
    """Per validation input: every backend's valid audio as WAV and one waveform + spectrogram
    plot of all of them (``<label>_case<i>_<backend>.wav``, ``<label>_case<i>.png``)."""
    from kiln.validate.audio import waveform_plot, write_wav

    rate = int(facts_["sample_rate"])
    out_dir = Path(out_dir)
    written = []
    for i, ref in enumerate(reference):
        n = int(np.ravel(ref["audio_length"])[0])
        waves = {"torch": _valid_audio(ref, n)}
        waves.update({name: _valid_audio(steps[i], n) for name, steps in candidates.items()})
        for name, wave in waves.items():
            written.append(write_wav(out_dir / f"{label}_case{i}_{name}.wav", wave, rate))
        title = f"{label} case {i}" + (" [synthetic weights]" if facts_.get("synthetic") else "")
        written.append(waveform_plot(out_dir / f"{label}_case{i}.png", title, rate, waves))
    return written
