"""Kokoro's contract, torch-free: the token buffer and audio window of an entry, its one contract,
and the validation input of a phoneme string. The spec (``__init__``) and the validation feeds read
them without importing the network (``build``), so judging jobs never import torch."""

from __future__ import annotations

import base64
from typing import Any, Mapping

import numpy as np

from kiln.config import ComponentConfig
from kiln.foundation.errors import ContractError
from kiln.family.contract import Contract, f32, i32, samples_of
from kiln.family.spec import require_fact

#: kokoro's Generator hard-codes the sample rate of its harmonic source
SAMPLE_RATE = 24_000


def voice_rows(facts_: Mapping[str, Any]) -> np.ndarray:
    """The voice pack stored in the facts, ``[rows, 2*style]`` float32."""
    pack = require_fact(facts_, "voice_pack", "kokoro")
    return np.frombuffer(base64.b64decode(pack["float32_base64"]), dtype=np.float32).reshape(pack["shape"])


def phonemes_to_ids(phonemes: str, vocab: Mapping[str, int], max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids [1, T], attention_mask [1, T])`` int32: ``0, ids..., 0`` then padding, as
    ``KModel.forward`` builds it. An unknown phoneme or a sequence longer than the buffer is a
    :class:`ContractError` naming it (kokoro itself drops unknown symbols silently)."""
    unknown = sorted({p for p in phonemes if p not in vocab})
    if unknown:
        raise ContractError(f"kokoro: phoneme(s) {unknown} not in the model's vocabulary")
    ids = [0, *(int(vocab[p]) for p in phonemes), 0]
    if len(ids) > max_tokens:
        raise ContractError(f"kokoro: {len(phonemes)} phonemes + 2 boundary tokens = {len(ids)} tokens, "
                            f"input_ids holds {max_tokens}")
    input_ids = np.zeros((1, max_tokens), dtype=np.int32)
    mask = np.zeros((1, max_tokens), dtype=np.int32)
    input_ids[0, :len(ids)] = ids
    mask[0, :len(ids)] = 1
    return input_ids, mask


def _shape(component: ComponentConfig, name: str, kind: str = "inputs") -> tuple[int, ...]:
    for spec in getattr(component, kind):
        if spec.name == name:
            return tuple(spec.shape)
    raise ContractError(f"{component.model}/{component.name}: the contract has no {kind[:-1]} '{name}'")


def contract_lengths(component: ComponentConfig) -> tuple[int, int, int]:
    """``(max_tokens, samples, harmonics)`` of the component's contract (checked against the
    family's :data:`CONTRACT` by :func:`kiln.family.contract.check` before any wrapper is built)."""
    return (_shape(component, "input_ids")[-1], _shape(component, "audio", "outputs")[-1],
            _shape(component, "source_noise")[-1])


def window_values(facts_: Mapping[str, Any], options: Mapping[str, Any]) -> dict:
    """``samples`` of the entry's ``seconds`` window (raises unless it is a whole number of
    duration frames)."""
    samples = samples_of(options["seconds"], int(require_fact(facts_, "sample_rate", "kokoro")), "kokoro")
    frame = int(require_fact(facts_, "frame_samples", "kokoro"))
    if samples % frame:
        raise ContractError(f"kokoro: a window of {options['seconds']} s ({samples} samples) is not a whole "
                            f"number of {frame}-sample duration frames")
    return {"samples": samples}


#: the contract, stated once: a token buffer of ``max_tokens`` and a window of ``seconds`` (the
#: entry's options), the style and harmonic sizes from the checkpoint's facts
CONTRACT = Contract(
    inputs=(i32("input_ids", 1, "max_tokens"), i32("attention_mask", 1, "max_tokens"), f32("ref_s", 1, "ref_s_dim"),
            f32("random_phases", 1, "harmonics"), f32("source_noise", 1, "samples", "harmonics"), f32("speed", 1)),
    outputs=(f32("audio", 1, "samples"), i32("pred_dur", 1, "max_tokens"), i32("audio_length", 1),
             i32("clamped", 1)),
    values=window_values)


def make_feed(facts_: Mapping[str, Any], component: ComponentConfig, phonemes: str,
              voice: Any = None, seed: int = 0, speed: float = 1.0) -> dict[str, np.ndarray]:
    """One input: tokens of ``phonemes``, the voice-pack row for its length (what KPipeline picks;
    ``voice`` defaults to the facts' pack), and the vocoder's randomness drawn on the host from
    ``seed`` (``random_phases`` uniform in [0, 1), ``source_noise`` standard normal, as kokoro draws)."""
    max_tokens, samples, harmonics = contract_lengths(component)
    ids, mask = phonemes_to_ids(phonemes, facts_["vocab"], max_tokens)
    rows = voice_rows(facts_) if voice is None else np.asarray(voice, dtype=np.float32).reshape(len(voice), -1)
    rng = np.random.default_rng(seed)
    feed = {
        "input_ids": ids, "attention_mask": mask,
        "ref_s": rows[min(max(len(phonemes), 1), rows.shape[0]) - 1].reshape(1, -1).astype(np.float32),
        "random_phases": rng.random((1, harmonics), dtype=np.float32),
        "source_noise": rng.standard_normal((1, samples, harmonics), dtype=np.float32),
    }
    if any(s.name == "speed" for s in component.inputs):
        feed["speed"] = np.array([speed], dtype=np.float32)
    return feed
