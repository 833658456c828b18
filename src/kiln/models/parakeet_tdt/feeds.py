"""Parakeet TDT's validation inputs (the reference job): 15 s of speech through the torch programs
with greedy TDT decoding traced (the feeds of every component), and the decoding task's inputs and
run (the end-to-end job runs it on every backend)."""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Mapping

import numpy as np

from kiln.foundation.errors import ModelError
from kiln.family.spec import Context, Feeds, require_fact
from kiln.models._tdt import tdt_greedy
from kiln.models.parakeet_tdt.contract import FAMILY_NAME, _samples


DECODER_STEPS = 48     # validation: decoder steps streamed with state carried


JOINT_STEPS = 64       # validation: (frame, decoder output) pairs sent to the joint components


JOINT_DECISION_CALLS = 3


def _window(ctx: Context) -> int:
    for name in ("mel_encoder", "preprocessor"):
        if name in ctx.model.components:
            return _samples(ctx.contract(name))
    raise ModelError(f"{ctx.model.name}: validating needs an audio component (preprocessor or "
                     "mel_encoder) to know the window length")


def _audio_inputs(ctx: Context) -> dict:
    def make():
        n = _window(ctx)
        rate = require_fact(ctx.facts, "sample_rate", FAMILY_NAME)
        audio = ctx.speech(n / rate, rate=rate)[:n]
        audio = np.concatenate([audio, np.zeros(n - audio.size, np.float32)]).astype(np.float32)
        return {"audio_signal": audio[None], "audio_length": np.array([n], np.int32)}
    return ctx.memo("audio", make)


def _describe_audio(ctx: Context) -> str:
    n = _window(ctx)
    return f"espeak-ng speech mixed with silence and noise, {n / ctx.facts['sample_rate']:.1f} s at " \
           f"{ctx.facts['sample_rate']} Hz"


ENCODER_PATHS = (("preprocessor", "encoder"), ("mel_encoder",))


def encoder_path(components) -> tuple[str, ...]:
    """The components that turn audio into encoder frames: preprocessor then encoder, else the
    fused mel_encoder (only one path is loaded: the full-size encoder is 2.4 GB)."""
    for path in ENCODER_PATHS:
        if all(name in components for name in path):
            return path
    raise ModelError(f"greedy decoding needs preprocessor + encoder or mel_encoder; have {sorted(components)}")


def _encoded(components: Mapping[str, Callable], inputs: Mapping[str, np.ndarray]) -> dict:
    """Encoder output of ``inputs`` (audio) through mel_encoder, or preprocessor then encoder."""
    if encoder_path(components) == ENCODER_PATHS[0]:
        mel = components["preprocessor"](dict(inputs))
        return components["encoder"]({"mel": np.asarray(mel["mel"], np.float32),
                                      "mel_length": np.asarray(mel["mel_length"]).astype(np.int32)})
    return components["mel_encoder"](dict(inputs))


def decode(components: Mapping[str, Callable], facts: Mapping[str, Any], enc: Mapping,
           record: list | None = None) -> dict:
    """TDT greedy decoding on the host with ``decoder`` and ``joint_decision_single_step``."""
    h_shape, c_shape = tuple(facts["h_shape"]), tuple(facts["c_shape"])
    dec, joint_step_fn = components["decoder"], components["joint_decision_single_step"]

    def decode_step(target, h, c):
        out = dec({"targets": np.array([[target]], np.int32), "target_length": np.ones(1, np.int32),
                   "h_in": np.asarray(h, np.float32).reshape(h_shape),
                   "c_in": np.asarray(c, np.float32).reshape(c_shape)})
        return (np.asarray(out["decoder"], np.float32).reshape(1, -1, 1),
                np.asarray(out["h_out"], np.float32).reshape(h_shape),
                np.asarray(out["c_out"], np.float32).reshape(c_shape))

    def joint_step(f, g):
        out = joint_step_fn({"encoder_step": f, "decoder_step": g})
        return (int(np.ravel(out["token_id"])[0]), float(np.ravel(out["token_prob"])[0]),
                int(np.ravel(out["duration"])[0]))

    encoded = np.asarray(enc["encoder"], np.float32)[0]
    length = int(np.ravel(enc["encoder_length"])[0])
    return tdt_greedy(encoded, length, decode_step, joint_step, blank_id=facts["blank_id"],
                      state_shape=c_shape, h_shape=h_shape, max_symbols=facts["max_symbols"], record=record)


def _reference_decode(ctx: Context) -> dict:
    def make():
        components = {n: ctx.torch(n) for n in ("decoder", "joint_decision_single_step",
                                                 *encoder_path(ctx.predictors))}
        enc = _encoded(components, _audio_inputs(ctx))
        trace: list = []
        decoded = decode(components, ctx.facts, enc, record=trace)
        return {"encoder": enc, "decoded": decoded, "trace": trace}
    return ctx.memo("decode", make)


def audio_feeds(ctx: Context, component) -> Feeds:
    return Feeds([_audio_inputs(ctx)], _describe_audio(ctx) + ", one window")


def mel_feeds(ctx: Context, component) -> Feeds:
    mel = ctx.torch("preprocessor")(_audio_inputs(ctx))
    return Feeds([{"mel": mel["mel"], "mel_length": mel["mel_length"]}],
                 _describe_audio(ctx) + ", mel from the torch preprocessor")


def decoder_feeds(ctx: Context, component) -> Feeds:
    """The start step (blank), the tokens greedy decoding emitted, then fixed filler ids."""
    tokens = _reference_decode(ctx)["decoded"]["tokens"][:DECODER_STEPS - 1]
    targets = [ctx.facts["blank_id"]] + tokens
    targets += [(7 * i + 3) % ctx.facts["vocab_size"] for i in range(DECODER_STEPS - len(targets))]
    return Feeds([{"targets": np.array([[t]], np.int32), "target_length": np.ones(1, np.int32)}
                  for t in targets],
                 f"{len(targets)} prediction-net steps (blank, the tokens torch greedy decoding emitted, "
                 "filler ids), LSTM state carried")


def joint_step_feeds(ctx: Context, component) -> Feeds:
    trace = _reference_decode(ctx)["trace"][:JOINT_STEPS]
    return Feeds([{"encoder_step": s["encoder_step"], "decoder_step": s["decoder_step"]} for s in trace],
                 f"the first {len(trace)} (encoder frame, decoder output) pairs of torch greedy decoding")


def joint_decision_feeds(ctx: Context, component) -> Feeds:
    ref = _reference_decode(ctx)
    seen, steps = set(), []
    for s in ref["trace"]:
        digest = hashlib.sha256(s["decoder_step"].tobytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            steps.append({"encoder": ref["encoder"]["encoder"], "decoder_step": s["decoder_step"]})
        if len(steps) == JOINT_DECISION_CALLS:
            break
    return Feeds(steps, f"the whole encoder output against the first {len(steps)} distinct decoder outputs "
                        "of torch greedy decoding")


def task_inputs(ctx: Context) -> dict:
    return dict(_audio_inputs(ctx))


def text_of(tokens: list[int], facts) -> str:
    pieces = facts["vocabulary"]
    return "".join(pieces[t] for t in tokens if 0 <= t < len(pieces)).replace("\u2581", " ").strip()


def run_task(components: Mapping[str, Callable], facts, inputs) -> dict:
    enc = _encoded(components, inputs)
    decoded = decode(components, facts, enc)
    return {"tokens": decoded["tokens"], "durations": decoded["durations"], "frames": decoded["frames"],
            "text": text_of(decoded["tokens"], facts),
            "encoder_length": int(np.ravel(enc["encoder_length"])[0])}
