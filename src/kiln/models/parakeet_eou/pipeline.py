"""Parakeet EOU's host pipeline, torch-free: the validation audio, and audio streamed chunk by chunk
through any backend's components (mel -> encoder with every cache carried -> greedy RNNT with the
decoder state kept across chunks). The reference job runs it on torch, the end-to-end job on every
Core ML backend, the build part in its faithfulness check."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from kiln.family.spec import stream
from kiln.models.parakeet_eou.contract import ENCODER_STREAM, PREPROCESSOR_STREAM

EOU_SENTENCES = ("Turn detection tells a voice agent when you are done.",
                 "Please call Stella and ask her to bring these things.")


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
                  record: list | None = None) -> GreedyRNNT:
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

    greedy = GreedyRNNT(decode_step, joint_step, facts, record=record)
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
    eou = eou_chunks(greedy.tokens, greedy.token_chunks, facts["eou_id"])
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


class GreedyRNNT:
    """NeMo's ``GreedyRNNTInfer`` on the host, frame by frame, its state kept across chunks so the
    token stream of a live session can be followed chunk by chunk.

    ``decoder(target, h, c) -> (g, h, c)``; ``joint(f [1,d,1], g) -> (token, prob)``. At each frame up
    to ``max_symbols`` tokens are emitted; a blank moves to the next frame. The start step feeds
    blank (the embedding's zero padding row) with zero state, as NeMo does.
    """

    def __init__(self, decoder: Callable, joint: Callable, facts: Mapping[str, Any], record: list | None = None):
        self.decoder, self.joint = decoder, joint
        self.blank, self.max_symbols = facts["blank_id"], facts["max_symbols"]
        self.h = np.zeros((facts["pred_rnn_layers"], 1, facts["lstm_proj"]), np.float32)
        self.c = np.zeros((facts["pred_rnn_layers"], 1, facts["lstm_hidden"]), np.float32)
        self.g, self.h_next, self.c_next = decoder(self.blank, self.h, self.c)
        self.record = record
        self.tokens: list[int] = []
        self.token_chunks: list[int] = []
        self.token_frames: list[int] = []
        self.frame = 0

    def chunk(self, encoded: np.ndarray, length: int, chunk_index: int) -> None:
        """Decode the ``length`` valid frames of ``encoded [d, T]``."""
        for t in range(length):
            f = np.ascontiguousarray(encoded[:, t:t + 1][None], dtype=np.float32)
            for _ in range(self.max_symbols):
                token, prob = self.joint(f, self.g)
                if self.record is not None:
                    self.record.append({"encoder_step": f, "decoder_step": self.g})
                if token == self.blank:
                    break
                self.tokens.append(int(token))
                self.token_chunks.append(int(chunk_index))
                self.token_frames.append(self.frame)
                self.h, self.c = self.h_next, self.c_next
                self.g, self.h_next, self.c_next = self.decoder(int(token), self.h, self.c)
            self.frame += 1


def eou_chunks(tokens: list[int], token_chunks: list[int], eou_id: int | None) -> list[int]:
    return [c for t, c in zip(tokens, token_chunks) if eou_id is not None and t == eou_id]
