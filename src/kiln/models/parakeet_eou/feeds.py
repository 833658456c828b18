"""Parakeet EOU's validation inputs (the reference job): the validation audio chunk by chunk through
the torch programs (the feeds of every component), and the EOU task's inputs and run (greedy RNNT
over the streamed chunks, per chunk size)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from kiln.foundation.errors import ModelError
from kiln.family.spec import Feeds
from kiln.models.parakeet_eou.contract import PREPROCESSOR_STREAM, chunk_pairs, chunk_samples_of
from kiln.models.parakeet_eou.pipeline import audio_chunks, eou_audio, run_pipeline


DECODER_STEPS = 48        # validation: decoder steps streamed with state carried


JOINT_STEPS = 96          # validation: (frame, decoder output) pairs of the greedy trace


def _pipeline_memo(ctx, encoder: str | None = None) -> dict:
    """The pipeline of ``encoder`` (default: the first configured streaming encoder) and its
    preprocessor, on torch, with the greedy trace."""
    pairs = chunk_pairs(ctx.model.components)
    if not pairs:
        raise ModelError(f"{ctx.model.name}: no streaming_encoder entry (with its preprocessor) is configured")
    encoder = encoder or next(iter(pairs))

    def compute():
        chunk = chunk_samples_of(ctx.contract(pairs[encoder]), ctx.facts)
        audio = ctx.memo("audio", lambda: eou_audio(ctx.facts["sample_rate"], multiple=_largest_chunk(ctx)))
        record: list = []
        components = {name: ctx.torch(name) for name in (pairs[encoder], encoder, "decoder", "joint_decision")}
        result = run_pipeline(components, ctx.facts, audio, chunk, pairs[encoder], encoder, record)
        result["trace"] = record
        return result
    return ctx.memo(f"pipeline:{encoder}", compute)


def _largest_chunk(ctx) -> int:
    sizes = [chunk_samples_of(c, ctx.facts) for c in ctx.model.components.values()
             if c.spec == PREPROCESSOR_STREAM.name]
    return max(sizes) if sizes else 1


def preprocessor_feeds(ctx, component) -> Feeds:
    chunk = chunk_samples_of(component, ctx.facts)
    audio = ctx.memo("audio", lambda: eou_audio(ctx.facts["sample_rate"], multiple=_largest_chunk(ctx)))
    return Feeds(audio_chunks(audio, chunk), "espeak-ng speech, pause, speech, pause, chunk by chunk",
                 step_seconds=chunk / ctx.facts["sample_rate"])


def encoder_feeds(ctx, component) -> Feeds:
    pre = chunk_pairs(ctx.model.components)[component.name]
    mels = ctx.stream(pre, preprocessor_feeds(ctx, ctx.contract(pre)).steps)
    frames = [np.asarray(m["mel"], np.float32) for m in mels]
    chunk = chunk_samples_of(component, ctx.facts)
    return Feeds([{"audio_signal": m, "audio_length": np.array([m.shape[-1]], np.int32)} for m in frames],
                 f"log-mel chunks of the streamed {pre} (torch)", step_seconds=chunk / ctx.facts["sample_rate"])


def decoder_feeds(ctx, component) -> Feeds:
    tokens = _pipeline_memo(ctx)["tokens"][:DECODER_STEPS - 1]
    vocab = int(ctx.facts["vocab_size"])
    targets = [int(ctx.facts["blank_id"])] + tokens
    targets += [(7 * i + 3) % vocab for i in range(DECODER_STEPS - len(targets))]
    return Feeds([{"targets": np.array([[t]], np.int32), "target_length": np.ones(1, np.int32)} for t in targets],
                 "blank, then the tokens torch's greedy RNNT emitted, then a fixed token walk")


def joint_feeds(ctx, component) -> Feeds:
    trace = _pipeline_memo(ctx)["trace"]
    if not trace:
        raise ModelError(f"{ctx.model.name}: the greedy decoding trace is empty (no encoder frames)")
    picks = [trace[int(i)] for i in np.linspace(0, len(trace) - 1, min(JOINT_STEPS, len(trace)))]
    return Feeds([{"encoder_step": s["encoder_step"], "decoder_step": s["decoder_step"]} for s in picks],
                 "(encoder frame, decoder output) pairs of torch's greedy RNNT decoding")


def task_inputs(ctx) -> dict:
    """The audio, and every chunk size's pipeline: the streaming encoder entries (``encoders``), the
    preprocessor of each (``preprocessors``) and its chunk in samples (``chunk_samples``)."""
    audio = ctx.memo("audio", lambda: eou_audio(ctx.facts["sample_rate"], multiple=_largest_chunk(ctx)))
    pairs = chunk_pairs(ctx.model.components)
    return {"audio": audio, "encoders": np.array(list(pairs), dtype=str),
            "preprocessors": np.array(list(pairs.values()), dtype=str),
            "chunk_samples": np.array([chunk_samples_of(ctx.contract(p), ctx.facts) for p in pairs.values()], np.int64)}


def task_run(components: Mapping[str, Callable], facts: Mapping[str, Any], inputs) -> dict:
    """Greedy RNNT for every chunk size whose preprocessor and streaming encoder are given: token
    stream, the chunk of every token, the chunks where ``<EOU>`` fires, per-chunk encoder norms."""
    audio = np.asarray(inputs["audio"], np.float32).reshape(-1)
    out = {}
    pipelines = zip(np.atleast_1d(inputs["encoders"]), np.atleast_1d(inputs["preprocessors"]),
                    np.atleast_1d(inputs["chunk_samples"]))
    for encoder, preprocessor, chunk in sorted((str(e), str(p), int(c)) for e, p, c in pipelines):
        if encoder not in components or preprocessor not in components:
            continue
        result = run_pipeline(components, facts, audio, chunk, preprocessor, encoder)
        result.pop("mels"), result.pop("encoded")
        out[encoder] = result
    return {"synthetic": bool(facts.get("synthetic")), "eou_id": facts["eou_id"], "blank_id": facts["blank_id"],
            "by_chunk_size": out}
