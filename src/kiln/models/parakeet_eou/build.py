"""Parakeet EOU's build part: restore the ``.nemo`` (refusing a non-streaming encoder or a vocabulary
without ``<EOU>``), the facts, the chunk of every entry (its ``chunk_ms`` option), the per-chunk wrappers
(:mod:`kiln.models.parakeet_eou.net`), tracing inputs, the streamed pipeline (audio -> mel ->
encoder -> greedy RNNT) and the faithfulness checks against NeMo's own streaming."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from kiln.foundation.errors import ContractError, ModelError
from kiln.family.contract import Contract, f32, i32
from kiln.family.spec import StatePair, require_fact, stream
from kiln.models._fastconformer import PredictionNet
from kiln.models._tdt import agreement
from kiln.models.parakeet_eou import net as _eou


FAMILY_NAME = "parakeet_eou"


EOU_SENTENCES = ("Turn detection tells a voice agent when you are done.",
                 "Please call Stella and ask her to bring these things.")


def chunk_values(facts: Mapping[str, Any], options: Mapping[str, Any]) -> dict:
    """The sizes a chunk's shapes use: ``chunk_samples`` from ``options.chunk_ms``, ``mel_frames``,
    ``encoder_frames`` (raises when the chunk is not a whole number of native attention chunks)."""
    rate = int(require_fact(facts, "sample_rate", FAMILY_NAME))
    chunk_ms = options["chunk_ms"]
    if (chunk_ms * rate) % 1000:
        raise ContractError(f"{FAMILY_NAME}: chunk_ms {chunk_ms} is not a whole number of samples at {rate} Hz")
    g = _eou.chunk_geometry(facts, chunk_ms * rate // 1000)
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


# -- source ------------------------------------------------------------------------------------------

def load(record) -> _eou.EOUSource:
    """Restore the ``.nemo`` safely and refuse a non-streaming encoder or a vocabulary without
    ``<EOU>`` (error naming the file and what is missing), before any export."""
    return _eou.load(record.file("checkpoint"))


def facts(source: _eou.EOUSource) -> dict:
    return _eou.facts(source)


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


def preprocessor_wrapper(source, component, facts):
    return _eou.StreamingMel(source.featurizer, chunk_samples_of(component, facts), facts["stft_context"]).eval()


def encoder_wrapper(source, component, facts):
    frames = _eou.chunk_geometry(facts, chunk_samples_of(component, facts))["encoder_frames"]
    return _eou.StreamingEncoderStep(source.encoder, frames, facts["mel_lag_frames"]).eval()


def decoder_wrapper(source, component, facts):
    return PredictionNet(source.model.decoder).eval()


def joint_wrapper(source, component, facts):
    return _eou.RNNTJointDecision(source.model.joint).eval()


def encoder_example(component, facts, rng) -> dict:
    """A mid-stream chunk: realistic log-mel values, a partly filled attention cache."""
    shapes = {t.name: t.shape for t in component.inputs}
    mel = (-4.0 + 2.0 * rng.standard_normal(shapes["audio_signal"])).astype(np.float32)
    return {"audio_signal": mel, "audio_length": np.array([shapes["audio_signal"][-1]], np.int32),
            "pre_cache": (-4.0 + 2.0 * rng.standard_normal(shapes["pre_cache"])).astype(np.float32),
            "cache_last_channel": (0.5 * rng.standard_normal(shapes["cache_last_channel"])).astype(np.float32),
            "cache_last_time": (0.5 * rng.standard_normal(shapes["cache_last_time"])).astype(np.float32),
            "cache_last_channel_len": np.array([shapes["cache_last_channel"][2] // 2], np.int32)}


def decoder_example(component, facts, rng) -> dict:
    shapes = {t.name: t.shape for t in component.inputs}
    return {"targets": np.array([[int(rng.integers(0, facts["vocab_size"]))]], np.int32),
            "target_length": np.ones(1, np.int32),
            "h_in": (0.1 * rng.standard_normal(shapes["h_in"])).astype(np.float32),
            "c_in": (0.1 * rng.standard_normal(shapes["c_in"])).astype(np.float32)}


def eou_audio(rate: int, seed: int = 0, multiple: int = 1) -> np.ndarray:
    """Speech, a pause, more speech, a pause (espeak-ng, low noise), padded to a whole number of
    ``multiple`` samples: where an end-of-utterance decision is due twice."""
    from kiln.audio import espeak

    rng = np.random.default_rng(seed)
    parts = [np.zeros(int(0.3 * rate), np.float32)]
    for sentence, pause in zip(EOU_SENTENCES, (1.0, 1.3)):
        speech = espeak(sentence, rate)
        parts += [0.5 * speech / max(1e-6, float(np.abs(speech).max())), np.zeros(int(pause * rate), np.float32)]
    audio = np.concatenate(parts)
    audio = np.concatenate([audio, np.zeros((-audio.size) % multiple, np.float32)])
    noise = rng.standard_normal(audio.size).astype(np.float32) * np.float32(10 ** (-45 / 20))
    return (audio + noise).astype(np.float32)


def _zeros_state(facts: Mapping[str, Any]) -> dict:
    L, d = facts["n_layers"], facts["d_model"]
    return {"pre_cache": np.zeros((1, facts["n_mels"], facts["pre_encode_cache_size"]), np.float32),
            "cache_last_channel": np.zeros((L, 1, facts["last_channel_cache_size"], d), np.float32),
            "cache_last_time": np.zeros((L, 1, d, facts["conv_cache_size"]), np.float32),
            "cache_last_channel_len": np.zeros(1, np.int32)}


def audio_chunks(audio: np.ndarray, chunk: int) -> list[dict]:
    n = audio.size // chunk
    return [{"audio_signal": audio[None, i * chunk:(i + 1) * chunk].astype(np.float32)} for i in range(n)]


def stream_mel(predict: Callable, facts: Mapping[str, Any], audio: np.ndarray, chunk: int) -> list[dict]:
    initial = {"audio_context": np.zeros((1, facts["stft_context"]), np.float32)}
    return stream(predict, PREPROCESSOR_STREAM, audio_chunks(audio, chunk), initial)


def stream_encoder(predict: Callable, facts: Mapping[str, Any], mels: list[np.ndarray]) -> list[dict]:
    feeds = [{"audio_signal": np.asarray(m, np.float32), "audio_length": np.array([m.shape[-1]], np.int32)}
             for m in mels]
    return stream(predict, ENCODER_STREAM, feeds, _zeros_state(facts))


def greedy_decode(decoder: Callable, joint: Callable, facts: Mapping[str, Any], encoded: list[dict],
                  record: list | None = None) -> _eou.GreedyRNNT:
    h_shape = (facts["pred_rnn_layers"], 1, facts["lstm_proj"])
    c_shape = (facts["pred_rnn_layers"], 1, facts["lstm_hidden"])

    def decode_step(target, h, c):
        out = decoder({"targets": np.array([[target]], np.int32), "target_length": np.ones(1, np.int32),
                       "h_in": np.asarray(h, np.float32).reshape(h_shape),
                       "c_in": np.asarray(c, np.float32).reshape(c_shape)})
        return (np.asarray(out["decoder"], np.float32), np.asarray(out["h_out"], np.float32).reshape(h_shape),
                np.asarray(out["c_out"], np.float32).reshape(c_shape))

    def joint_step(f, g):
        out = joint({"encoder_step": f, "decoder_step": g})
        return int(np.ravel(out["token_id"])[0]), float(np.ravel(out["token_prob"])[0])

    greedy = _eou.GreedyRNNT(decode_step, joint_step, facts, record=record)
    for index, step in enumerate(encoded):
        out = np.asarray(step["encoded_output"], np.float32)[0]
        greedy.chunk(out, int(np.ravel(step["encoded_length"])[0]), index)
    return greedy


def run_pipeline(components: Mapping[str, Callable], facts: Mapping[str, Any], audio: np.ndarray,
                 chunk: int, preprocessor: str, encoder: str, record: list | None = None) -> dict:
    """Audio -> streamed mel (``preprocessor``) -> streamed ``encoder`` -> greedy RNNT with decoder
    state kept across chunks, on one backend's components. JSON-able except ``encoded``."""
    mels = stream_mel(components[preprocessor], facts, audio, chunk)
    encoded = stream_encoder(components[encoder], facts, [m["mel"] for m in mels])
    greedy = greedy_decode(components["decoder"], components["joint_decision"], facts, encoded, record)
    eou = _eou.eou_chunks(greedy.tokens, greedy.token_chunks, facts["eou_id"])
    # the token / EOU timeline, one value per chunk (for plots over time)
    tokens_per_chunk = np.bincount(np.asarray(greedy.token_chunks, np.int64), minlength=len(encoded))
    eou_per_chunk = np.bincount(np.asarray(eou, np.int64), minlength=len(encoded))
    return {"chunks": len(encoded), "chunk_ms": 1000.0 * chunk / facts["sample_rate"],
            "tokens_per_chunk": [int(v) for v in tokens_per_chunk[:len(encoded)]],
            "eou_per_chunk": [int(v) for v in eou_per_chunk[:len(encoded)]],
            "tokens": greedy.tokens, "token_chunks": greedy.token_chunks, "token_frames": greedy.token_frames,
            "eou_chunks": eou, "first_eou_chunk": eou[0] if eou else None,
            "encoder_l2_per_chunk": [float(np.linalg.norm(s["encoded_output"])) for s in encoded],
            "mels": mels, "encoded": encoded}


#: NeMo's own streaming-vs-offline criterion: examples/asr/asr_cache_aware_streaming/
#: speech_to_text_cache_aware_streaming_infer.py (``compare_vs_offline``) counts differing greedy
#: predictions and expects 0 ("Normally they should be exactly the same predictions for streaming
#: models"); NeMo's installed package ships no tests, and the script compares predictions, not floats.
OFFLINE_TOKEN_DIFFERENCES_ALLOWED = 0


def session_comparison(source, pipeline: Mapping[str, Any], facts: Mapping[str, Any], audio: np.ndarray,
                       encoder_frames: int) -> dict:
    """kiln's pipeline (:func:`run_pipeline` on ``audio``) against the same audio streamed by NeMo
    end to end (:func:`kiln.models._eou.nemo_session`: NeMo's preprocessor, streaming buffer,
    encoder and greedy RNNT): the tokens of every chunk, the chunks where ``<EOU>`` fires and the
    encoder output, chunk by chunk from chunk 0."""
    nemo = _eou.nemo_session(source, audio, encoder_frames)
    chunks = pipeline["chunks"]
    ours: list[list[int]] = [[] for _ in range(chunks)]
    for token, chunk in zip(pipeline["tokens"], pipeline["token_chunks"]):
        ours[chunk].append(int(token))
    theirs = [list(t) for t in nemo["tokens_per_chunk"][:chunks]]
    differing = [i for i in range(min(chunks, len(theirs))) if ours[i] != theirs[i]]
    eou = facts["eou_id"]
    encoder = [_eou.max_abs(np.asarray(s["encoded_output"], np.float32), e)
               for s, e in zip(pipeline["encoded"], nemo["encoded"][:chunks])]
    return {"chunks": chunks, "nemo_steps": len(nemo["tokens_per_chunk"]),
            "tokens_per_chunk": ours, "tokens_per_chunk_nemo": theirs,
            "first_differing_chunk": differing[0] if differing else None,
            "differing_chunks": len(differing),
            "eou_chunks": [i for i, t in enumerate(ours) if eou in t],
            "eou_chunks_nemo": [i for i, t in enumerate(theirs) if eou in t],
            "encoder_max_abs": max(encoder) if encoder else None,
            "match": not differing and len(theirs) >= chunks}


def faithfulness(source, predicts: Mapping[str, Callable], facts: Mapping[str, Any], components=None) -> dict:
    """For every streaming encoder: the traced programs streamed chunk by chunk vs NeMo's own
    ``cache_aware_stream_step`` (encoder output and every cache after every chunk), the streamed
    mel vs NeMo's offline preprocessor, streaming vs NeMo's offline encoder (greedy tokens, as
    NeMo's compare_vs_offline; encoder error), and the whole pipeline vs a session as NeMo runs it
    (:func:`session_comparison`), every one from the first chunk on."""
    if components is None:
        raise ModelError("parakeet_eou: faithfulness needs the model's component contracts (chunk sizes)")
    sizes = [chunk_samples_of(c, facts) for c in components.values() if c.spec == PREPROCESSOR_STREAM.name]
    audio = eou_audio(facts["sample_rate"], multiple=max(sizes, default=1))
    offline_mel = _eou.nemo_offline_mel(source, audio)
    lag = facts["mel_lag_frames"]
    report = {}
    pairs = chunk_pairs(components)
    for name in sorted(pairs):
        if name not in predicts:
            continue
        chunk = chunk_samples_of(components[pairs[name]], facts)
        geometry = _eou.chunk_geometry(facts, chunk)
        pipeline = run_pipeline({**predicts}, facts, audio, chunk, pairs[name], name)
        mel = np.concatenate([np.asarray(m["mel"], np.float32) for m in pipeline["mels"]], axis=2)
        nemo = _eou.nemo_streaming(source, mel[:, :, lag:], geometry["encoder_frames"])
        if len(nemo) != len(pipeline["encoded"]):
            raise ModelError(f"{source.path}: NeMo streamed {len(nemo)} chunks, the wrapper {len(pipeline['encoded'])}")
        errors = {key: max(_eou.max_abs(w[key], n[key]) for w, n in zip(pipeline["encoded"], nemo))
                  for key in ("encoded_output", "encoded_length", "new_cache_last_channel",
                              "new_cache_last_time", "new_cache_last_channel_len")}
        pre_errors = [_eou.max_abs(w["new_pre_cache"], n["chunk"][:, :, -facts["pre_encode_cache_size"]:])
                      for w, n in zip(pipeline["encoded"], nemo)]
        errors["new_pre_cache"] = max(pre_errors)
        frames = min(mel.shape[2] - lag, offline_mel.shape[2])
        mel_error = _eou.max_abs(mel[:, :, lag:lag + frames], offline_mel[:, :, :frames])
        # offline: NeMo's full-utterance encoder on NeMo's own mel. The streamed mel trails it by
        # `lag` frames, which puts fixed chunks on the subsampling grid: output frame i of both
        # covers the same audio, from the first frame on (the session starts as NeMo's does)
        offline = _eou.nemo_offline(source, offline_mel[:, :, :mel.shape[2] - lag])
        streamed = np.concatenate([np.asarray(s["encoded_output"], np.float32) for s in pipeline["encoded"]], axis=2)
        n = min(offline.shape[2], streamed.shape[2])

        def frames_as_steps(encoded: np.ndarray) -> list[dict]:
            size = geometry["encoder_frames"]
            return [{"encoded_output": encoded[:, :, i:i + size],
                     "encoded_length": np.array([encoded[:, :, i:i + size].shape[2]], np.int32)}
                    for i in range(0, encoded.shape[2], size)]

        offline_tokens = greedy_decode(predicts["decoder"], predicts["joint_decision"], facts,
                                       frames_as_steps(offline[:, :, :n])).tokens
        streamed_tokens = greedy_decode(predicts["decoder"], predicts["joint_decision"], facts,
                                        frames_as_steps(streamed[:, :, :n])).tokens
        token_diff = agreement(offline_tokens, streamed_tokens)
        report[name] = {
            "chunk_ms": geometry["chunk_ms"], "chunks": len(nemo),
            "vs_nemo_streaming_max_abs": errors,
            "vs_nemo_streaming_match": all(v <= 1e-4 for v in errors.values()),
            "mel_vs_nemo_offline_max_abs": mel_error,
            "offline": {"encoder_max_abs": _eou.max_abs(offline[:, :, :n], streamed[:, :, :n]),
                        "frames": n, "greedy_tokens": len(offline_tokens),
                        "greedy_token_differences": token_diff["edit_distance"],
                        "criterion": "NeMo compare_vs_offline: 0 differing greedy predictions",
                        "match": token_diff["edit_distance"] <= OFFLINE_TOKEN_DIFFERENCES_ALLOWED},
            "session": session_comparison(source, pipeline, facts, audio, geometry["encoder_frames"]),
            "tokens": pipeline["tokens"], "eou_chunks": pipeline["eou_chunks"]}
    return report
