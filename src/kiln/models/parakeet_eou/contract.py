"""Parakeet EOU's contracts, torch-free: the chunk geometry of an entry's ``chunk_ms``, every
component's contract, the streamed components' state pairs, and which preprocessor feeds which
encoder. The spec (``__init__``), the feeds and the judge read them without importing the network
(``build``, ``net``), so judging jobs never import torch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from kiln.foundation.errors import ContractError, ModelError
from kiln.family.contract import Contract, f32, i32
from kiln.family.spec import StatePair, require_fact

FAMILY_NAME = "parakeet_eou"


def chunk_geometry(facts: Mapping[str, Any], chunk_samples: int) -> dict:
    """Per-chunk sizes for a chunk of ``chunk_samples`` samples; a chunk must be a whole number of
    the model's native attention chunks (else streaming would differ from the trained masks)."""
    hop, sub, native = facts["hop_length"], facts["subsampling_factor"], facts["native_chunk_frames"]
    step = hop * sub * native
    if chunk_samples <= 0 or chunk_samples % step:
        raise ModelError(f"parakeet_eou: a chunk of {chunk_samples} samples is not a multiple of the "
                         f"model's native attention chunk ({native} encoder frames = {step} samples "
                         f"= {1000 * step / facts['sample_rate']:g} ms)")
    frames = chunk_samples // hop
    return {"chunk_samples": chunk_samples, "chunk_ms": 1000 * chunk_samples / facts["sample_rate"],
            "mel_frames": frames, "encoder_frames": frames // sub}


def chunk_values(facts: Mapping[str, Any], options: Mapping[str, Any]) -> dict:
    """The sizes a chunk's shapes use: ``chunk_samples`` from ``options.chunk_ms``, ``mel_frames``,
    ``encoder_frames`` (raises when the chunk is not a whole number of native attention chunks)."""
    rate = int(require_fact(facts, "sample_rate", FAMILY_NAME))
    chunk_ms = options["chunk_ms"]
    if (chunk_ms * rate) % 1000:
        raise ContractError(f"{FAMILY_NAME}: chunk_ms {chunk_ms} is not a whole number of samples at {rate} Hz")
    g = chunk_geometry(facts, chunk_ms * rate // 1000)
    return {"chunk_samples": g["chunk_samples"], "mel_frames": g["mel_frames"], "encoder_frames": g["encoder_frames"]}


#: every component's contract, stated once (shapes from the facts and the entry's chunk_ms; the
#: prepare job checks config.yaml's shapes against them, naming model, component, tensor and axis)
PREPROCESSOR_CONTRACT = Contract(
    inputs=(f32("audio_signal", 1, "chunk_samples"), f32("audio_context", 1, "stft_context")),
    outputs=(f32("mel", 1, "n_mels", "mel_frames"), f32("new_audio_context", 1, "stft_context")),
    values=chunk_values)


ENCODER_CACHES = ("pre_cache", "cache_last_channel", "cache_last_time", "cache_last_channel_len")
_CACHES = (f32("pre_cache", 1, "n_mels", "pre_encode_cache_size"),
           f32("cache_last_channel", "n_layers", 1, "last_channel_cache_size", "d_model"),
           f32("cache_last_time", "n_layers", 1, "d_model", "conv_cache_size"),
           i32("cache_last_channel_len", 1))


ENCODER_CONTRACT = Contract(
    inputs=(f32("audio_signal", 1, "n_mels", "mel_frames"), i32("audio_length", 1), *_CACHES),
    outputs=(f32("encoded_output", 1, "d_model", "encoder_frames"), i32("encoded_length", 1),
             *(dataclasses.replace(c, name=f"new_{c.name}") for c in _CACHES)),
    values=chunk_values)


DECODER_CONTRACT = Contract(
    inputs=(i32("targets", 1, 1), i32("target_length", 1), f32("h_in", "pred_rnn_layers", 1, "lstm_proj"),
            f32("c_in", "pred_rnn_layers", 1, "lstm_hidden")),
    outputs=(f32("decoder", 1, "pred_hidden", 1), f32("h_out", "pred_rnn_layers", 1, "lstm_proj"),
             f32("c_out", "pred_rnn_layers", 1, "lstm_hidden")))


JOINT_CONTRACT = Contract(
    inputs=(f32("encoder_step", 1, "d_model", 1), f32("decoder_step", 1, "pred_hidden", 1)),
    outputs=(i32("token_id", 1, 1, 1), f32("token_prob", 1, 1, 1)))


ENCODER_FLOAT_OUTPUTS = ("encoded_output", "new_pre_cache", "new_cache_last_channel", "new_cache_last_time")


#: the state pairs of the two streamed components (their specs: the package's ``__init__``)
PREPROCESSOR_STATE = (StatePair("audio_context", "new_audio_context"),)
ENCODER_STATE = tuple(StatePair(c, f"new_{c}") for c in ENCODER_CACHES)


@dataclass(frozen=True)
class Streamed:
    """What :func:`kiln.family.spec.stream` needs of a component: its name and state pairs."""

    name: str
    state: tuple[StatePair, ...]


PREPROCESSOR_STREAM = Streamed("preprocessor", PREPROCESSOR_STATE)
ENCODER_STREAM = Streamed("streaming_encoder", ENCODER_STATE)


def chunk_samples_of(component, facts: Mapping[str, Any]) -> int:
    """The chunk of a preprocessor / streaming encoder entry, in samples, from its option
    ``chunk_ms`` (the entry's shapes are checked against the same option by the family's contract)."""
    chunk_ms = component.options.get("chunk_ms")
    if not isinstance(chunk_ms, int) or isinstance(chunk_ms, bool):
        raise ContractError(f"models.{component.model}.components.{component.name}.options.chunk_ms: "
                            f"a {component.spec} needs its chunk in milliseconds, got {chunk_ms!r}")
    return chunk_values(facts, {"chunk_ms": chunk_ms})["chunk_samples"]


def chunk_pairs(components: Mapping[str, Any]) -> dict[str, str]:
    """``{streaming encoder entry: the preprocessor entry of the same chunk_ms}`` over a model's
    configured components (ComponentConfigs by name), in config order: which mel feeds which
    encoder follows from the entries' specs and options, not from their names."""
    preprocessors = {c.options.get("chunk_ms"): name for name, c in components.items()
                     if c.spec == PREPROCESSOR_STREAM.name}
    pairs = {}
    for name, c in components.items():
        if c.spec != ENCODER_STREAM.name:
            continue
        chunk_ms = c.options.get("chunk_ms")
        if chunk_ms not in preprocessors:
            raise ContractError(f"models.{c.model}.components.{name}: no preprocessor entry with chunk_ms "
                                f"{chunk_ms} feeds this streaming encoder (preprocessors: "
                                f"{ {v: k for k, v in preprocessors.items()} })")
        pairs[name] = preprocessors[chunk_ms]
    return pairs
