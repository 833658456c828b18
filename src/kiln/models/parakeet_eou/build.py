"""Parakeet EOU's build part: restore the ``.nemo`` (refusing a non-streaming encoder or a vocabulary
without ``<EOU>``), the facts, the chunk of every entry (its ``chunk_ms`` option), the per-chunk wrappers
(:mod:`kiln.models.parakeet_eou.net`), tracing inputs, the streamed pipeline (audio -> mel ->
encoder -> greedy RNNT) and the faithfulness checks against NeMo's own streaming."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from kiln.foundation.errors import ModelError
from kiln.models._fastconformer import PredictionNet
from kiln.models._tdt import agreement
from kiln.models.parakeet_eou import net as _eou
from kiln.models.parakeet_eou.contract import PREPROCESSOR_STREAM, chunk_geometry, chunk_pairs, chunk_samples_of
from kiln.models.parakeet_eou.pipeline import eou_audio, greedy_decode, run_pipeline


# -- source ------------------------------------------------------------------------------------------

def load(record) -> _eou.EOUSource:
    """Restore the ``.nemo`` safely and refuse a non-streaming encoder or a vocabulary without
    ``<EOU>`` (error naming the file and what is missing), before any export."""
    return _eou.load(record.file("checkpoint"))


def facts(source: _eou.EOUSource) -> dict:
    return _eou.facts(source)


def preprocessor_wrapper(source, component, facts):
    return _eou.StreamingMel(source.featurizer, chunk_samples_of(component, facts), facts["stft_context"]).eval()


def encoder_wrapper(source, component, facts):
    frames = chunk_geometry(facts, chunk_samples_of(component, facts))["encoder_frames"]
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
        geometry = chunk_geometry(facts, chunk)
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
