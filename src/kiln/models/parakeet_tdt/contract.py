"""Parakeet TDT's contracts, torch-free: every component's contract (sized by the checkpoint's facts
and the entry's ``seconds``) and the shapes read from an entry. The spec (``__init__``) and the
validation feeds read them without importing the network (``build``), so judging jobs never import
torch."""

from __future__ import annotations

import math
from typing import Any, Mapping

from kiln.family.contract import Axis, Contract, Tensor, f32, i32, samples_of
from kiln.family.spec import require_fact

SAMPLE_RATE = 16_000


AUDIO_INPUTS = ("audio_signal", "audio_length")


FAMILY_NAME = "parakeet_tdt"


def window_values(facts: Mapping[str, Any], options: Mapping[str, Any]) -> dict:
    """The sizes the contracts use: the LSTM state sizes (``h_shape``, ``c_shape``) and, for an
    entry with ``options.seconds``, the window's ``samples``, ``mel_frames`` (NeMo's centred STFT
    framing, rounded up to ``pad_to``) and ``encoder_frames`` (NeMo's ``calc_length`` of the conv
    subsampling); the wrappers check the last two against the modules they build."""
    h_layers, _, h_size = require_fact(facts, "h_shape", FAMILY_NAME)
    c_layers, _, c_size = require_fact(facts, "c_shape", FAMILY_NAME)
    out = {"pred_rnn_layers": int(h_layers), "lstm_proj": int(h_size), "lstm_hidden": int(c_size)}
    if "seconds" not in options:
        return out
    samples = samples_of(options["seconds"], int(require_fact(facts, "sample_rate", FAMILY_NAME)), FAMILY_NAME)
    frames = 1 + (samples + 2 * require_fact(facts, "stft_pad", FAMILY_NAME) - facts["n_fft"]) // facts["hop_length"]
    pad_to = facts.get("mel_pad_to", 0)
    if pad_to > 0:
        frames += (pad_to - frames % pad_to) % pad_to
    frames = max(frames, facts.get("mel_min_frames", 0))
    sub = require_fact(facts, "subsampling", FAMILY_NAME)
    encoder_frames = frames
    for _ in range(sub["repeats"]):
        encoder_frames = (encoder_frames + sub["all_paddings"] - sub["kernel_size"]) / sub["stride"] + 1
        encoder_frames = math.ceil(encoder_frames) if sub["ceil_mode"] else math.floor(encoder_frames)
    return {**out, "samples": samples, "mel_frames": frames, "encoder_frames": int(encoder_frames)}


#: every component's contract, stated once: shapes from the checkpoint's facts and, for the
#: window-sized ones, the entry's ``seconds`` (resolved by :func:`kiln.family.contract.resolve`,
#: checked by :func:`kiln.family.contract.check`)
_AUDIO = (f32("audio_signal", 1, "samples"), i32("audio_length", 1))
_MEL = (f32("mel", 1, "n_mels", "mel_frames"), i32("mel_length", 1))
_ENCODED = (f32("encoder", 1, "d_model", "encoder_frames"), i32("encoder_length", 1))
_STEP = (f32("encoder_step", 1, "d_model", 1), f32("decoder_step", 1, "pred_hidden", 1))


def _decision(frames: Axis) -> tuple[Tensor, ...]:
    return i32("token_id", 1, frames, 1), f32("token_prob", 1, frames, 1), i32("duration", 1, frames, 1)


CONTRACTS = {
    "preprocessor": Contract(_AUDIO, _MEL, window_values),
    "encoder": Contract(_MEL, _ENCODED, window_values),
    "mel_encoder": Contract(_AUDIO, _ENCODED, window_values),
    "decoder": Contract(
        (i32("targets", 1, 1), i32("target_length", 1), f32("h_in", "pred_rnn_layers", 1, "lstm_proj"),
         f32("c_in", "pred_rnn_layers", 1, "lstm_hidden")),
        (f32("decoder", 1, "pred_hidden", 1), f32("h_out", "pred_rnn_layers", 1, "lstm_proj"),
         f32("c_out", "pred_rnn_layers", 1, "lstm_hidden")), window_values),
    "joint": Contract(_STEP, (f32("logits", 1, 1, 1, "num_outputs"),)),
    "joint_decision": Contract((f32("encoder", 1, "d_model", "encoder_frames"), f32("decoder_step", 1, "pred_hidden", 1)),
                               _decision("encoder_frames"), window_values),
    "joint_decision_single_step": Contract(_STEP, _decision(1)),
}


#: the component specs sized by the window (they take ``options.seconds``)
WINDOWED = ("preprocessor", "encoder", "mel_encoder", "joint_decision")


def shape_of(component, name: str) -> tuple[int, ...]:
    """The shape of ``component``'s input ``name`` (its contract, checked against the family's)."""
    return next(tuple(t.shape) for t in component.inputs if t.name == name)


def _samples(component) -> int:
    return int(shape_of(component, "audio_signal")[-1])
