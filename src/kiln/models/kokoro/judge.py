"""Kokoro's judging part: the validation sentences, the RMS plot and the audio artifacts (WAVs and waveform + spectrogram plots per sentence); the waveform metric is :mod:`kiln.models.kokoro.waveform`'s."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from kiln.config import ComponentConfig
from kiln.family.spec import Context, Feeds, require_fact
from kiln.models.kokoro.build import contract_lengths, make_feed
from kiln.models.kokoro.waveform import _valid_audio, waveform_metrics  # noqa: F401  (the family's metric)


def sentence_steps(facts_: Mapping[str, Any], component: ComponentConfig) -> list[dict]:
    """One input per validation sentence, its phonemes cut to the token buffer."""
    max_tokens = contract_lengths(component)[0]
    phonemes = [p[:max_tokens - 2] for p in require_fact(facts_, "validation_phonemes", "kokoro")]
    return [make_feed(facts_, component, p, seed=i) for i, p in enumerate(phonemes)]


def sentence_feeds(ctx: Context, component: ComponentConfig) -> Feeds:
    """The validation sentences (espeak-ng phonemes), each cut to the token buffer; the longest
    overflows the 5 s window and must come back flagged ``clamped``."""
    steps = sentence_steps(ctx.facts, component)
    return Feeds(steps, f"{len(steps)} espeak-ng sentences as phoneme ids (voice "
                        f"'{ctx.facts['voice']}'), vocoder noise drawn from seeds 0..{len(steps) - 1}")


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
