"""Parakeet EOU (``nvidia/parakeet_realtime_eou_120m-v1``): cache-aware streaming FastConformer + RNNT
with an end-of-utterance token, exported per chunk with every cache explicit.

Components (names, shapes and dtypes follow FluidAudio; every size comes from the checkpoint and
the contract's chunk, see :func:`kiln.models._eou.contracts`):

``preprocessor``       ``audio_signal [1, N]`` (one chunk), ``audio_context [1, C]`` -> ``mel
                       [1, n_mels, N/hop]`` (un-normalised log-mel), ``new_audio_context``: the STFT's
                       left context as state.
``streaming_encoder``  ``audio_signal [1, n_mels, T]``, ``audio_length [1]``, ``pre_cache``,
                       ``cache_last_channel``, ``cache_last_time``, ``cache_last_channel_len`` ->
                       ``encoded_output [1, d, T/8]``, ``encoded_length``, ``new_pre_cache``,
                       ``new_cache_last_channel``, ``new_cache_last_time``, ``new_cache_last_channel_len``
                       (the four caches are state pairs). A session starts from zero caches:
                       ``cache_last_channel_len`` 0 makes the step NeMo's first streaming step
                       (``pre_cache`` and the first ``mel_lag_frames`` of the chunk precede the
                       stream and are ignored).
``decoder``            RNNT prediction net, one step, explicit LSTM state (``h_in``/``c_in`` pairs).
``joint_decision``     ``encoder_step [1, d, 1]``, ``decoder_step [1, H, 1]`` -> ``token_id``,
                       ``token_prob`` ([1,1,1]; RNNT: no durations).

Chunk sizes: the unsuffixed ``preprocessor`` / ``streaming_encoder`` take whatever chunk their
contract declares (320 ms in config.yaml); ``<name>_160ms`` / ``_1280ms`` are the same components
for other chunk sizes, built side by side in one model directory. FluidAudio keeps one directory
per chunk size with the same file names (``160ms/streaming_encoder.mlmodelc``); kiln's
``streaming_encoder_160ms.mlpackage`` maps to it by dropping the suffix into a directory name, and
the chunk-independent ``decoder`` / ``joint_decision`` are shared by every chunk size.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from kiln.errors import ContractError, ModelError
from kiln.models import _eou
from kiln.models._fastconformer import PredictionNet
from kiln.models._tdt import agreement
from kiln.family.spec import (ComponentSpec, Feeds, FamilySpec, Metric, PlotSeries, StatePair, Task,
                              require_fact, stream)

FAMILY_NAME = "parakeet_eou"
#: chunk sizes that get their own component names (the unsuffixed ones take the contract's size)
CHUNK_VARIANTS_MS = (160, 320, 1280)
DECODER_STEPS = 48        # validation: decoder steps streamed with state carried
JOINT_STEPS = 96          # validation: (frame, decoder output) pairs of the greedy trace
EOU_SENTENCES = ("Turn detection tells a voice agent when you are done.",
                 "Please call Stella and ask her to bring these things.")

PREPROCESSOR_IO = (("audio_signal", "audio_context"), ("mel", "new_audio_context"))
ENCODER_CACHES = ("pre_cache", "cache_last_channel", "cache_last_time", "cache_last_channel_len")
ENCODER_IO = (("audio_signal", "audio_length") + ENCODER_CACHES,
              ("encoded_output", "encoded_length") + tuple(f"new_{c}" for c in ENCODER_CACHES))
ENCODER_FLOAT_OUTPUTS = ("encoded_output", "new_pre_cache", "new_cache_last_channel", "new_cache_last_time")
DECODER_IO = (("targets", "target_length", "h_in", "c_in"), ("decoder", "h_out", "c_out"))
JOINT_IO = (("encoder_step", "decoder_step"), ("token_id", "token_prob"))


# -- source ------------------------------------------------------------------------------------------

def load(record) -> _eou.EOUSource:
    """Restore the ``.nemo`` safely and refuse a non-streaming encoder or a vocabulary without
    ``<EOU>`` (error naming the file and what is missing), before any export."""
    return _eou.load(record.file("checkpoint"))


def facts(source: _eou.EOUSource) -> dict:
    return _eou.facts(source)


def build_random(architecture: str, *, seed: int, overrides: Mapping[str, Any], out_dir) -> Any:
    return _eou.build_random(architecture, seed=seed, overrides=overrides, out_dir=out_dir)


# -- chunk sizes from names and contracts ---------------------------------------------------------------

def _suffix_ms(name: str) -> int | None:
    match = re.search(r"_(\d+)ms$", name)
    return int(match.group(1)) if match else None


def chunk_samples_of(component, facts: Mapping[str, Any]) -> int:
    """The chunk of a preprocessor / streaming encoder contract, in samples (checked against a
    ``_<n>ms`` name suffix and the model's native attention chunk)."""
    first = component.inputs[0]
    if first.name != "audio_signal":
        raise ContractError(f"{component.model}/{component.name}: first input must be audio_signal")
    if len(first.shape) == 2:
        samples = int(first.shape[-1])
    else:
        samples = int(first.shape[-1]) * int(require_fact(facts, "hop_length", FAMILY_NAME))
    _eou.chunk_geometry(facts, samples)  # raises when not a whole number of native chunks
    suffix = _suffix_ms(component.name)
    rate = int(require_fact(facts, "sample_rate", FAMILY_NAME))
    if suffix is not None and suffix * rate != samples * 1000:
        raise ContractError(f"{component.model}/{component.name}: the name says {suffix} ms but the "
                            f"contract's audio_signal is {1000 * samples / rate:g} ms")
    return samples


def check_contract(component, facts: Mapping[str, Any], kind: str) -> None:
    """Shapes and dtypes of ``component`` against what the checkpoint gives for its chunk."""
    samples = chunk_samples_of(component, facts) if kind in ("preprocessor", "streaming_encoder") else \
        int(facts["hop_length"]) * int(facts["subsampling_factor"]) * int(facts["native_chunk_frames"])
    expected = _eou.contracts(facts, samples)[kind]
    for side, specs in (("inputs", component.inputs), ("outputs", component.outputs)):
        got = [(s.name, list(s.shape), s.dtype) for s in specs]
        want = [(n, v["shape"], v["dtype"]) for n, v in expected[side].items()]
        if got != want:
            raise ContractError(f"{component.model}/{component.name}: {side} {got} do not match what the "
                                f"checkpoint gives for this chunk: {want}")


# -- wrappers (prepare job) -------------------------------------------------------------------------------

def preprocessor_wrapper(source, component, facts):
    check_contract(component, facts, "preprocessor")
    return _eou.StreamingMel(source.featurizer, chunk_samples_of(component, facts), facts["stft_context"]).eval()


def encoder_wrapper(source, component, facts):
    check_contract(component, facts, "streaming_encoder")
    frames = _eou.chunk_geometry(facts, chunk_samples_of(component, facts))["encoder_frames"]
    return _eou.StreamingEncoderStep(source.encoder, frames, facts["mel_lag_frames"]).eval()


def decoder_wrapper(source, component, facts):
    check_contract(component, facts, "decoder")
    return PredictionNet(source.model.decoder).eval()


def joint_wrapper(source, component, facts):
    check_contract(component, facts, "joint_decision")
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


# -- validation audio and the pipeline shared by feeds, the task and faithfulness ------------------------

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
    return stream(predict, PREPROCESSOR_SPEC, audio_chunks(audio, chunk), initial)


def stream_encoder(predict: Callable, facts: Mapping[str, Any], mels: list[np.ndarray]) -> list[dict]:
    feeds = [{"audio_signal": np.asarray(m, np.float32), "audio_length": np.array([m.shape[-1]], np.int32)}
             for m in mels]
    return stream(predict, ENCODER_SPEC, feeds, _zeros_state(facts))


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
                 chunk: int, suffix: str = "", record: list | None = None) -> dict:
    """Audio -> streamed mel -> streamed encoder -> greedy RNNT with decoder state kept across
    chunks, on one backend's components. JSON-able except ``encoded`` (per-chunk steps)."""
    mels = stream_mel(components["preprocessor" + suffix], facts, audio, chunk)
    encoded = stream_encoder(components["streaming_encoder" + suffix], facts, [m["mel"] for m in mels])
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


def _pipeline_memo(ctx, suffix: str = "") -> dict:
    def compute():
        chunk = chunk_samples_of(ctx.contract("preprocessor" + suffix), ctx.facts)
        audio = ctx.memo("audio", lambda: eou_audio(ctx.facts["sample_rate"], multiple=_largest_chunk(ctx)))
        record: list = []
        components = {name: ctx.torch(name) for name in
                      ("preprocessor" + suffix, "streaming_encoder" + suffix, "decoder", "joint_decision")}
        result = run_pipeline(components, ctx.facts, audio, chunk, suffix, record)
        result["trace"] = record
        return result
    return ctx.memo(f"pipeline{suffix}", compute)


def _largest_chunk(ctx) -> int:
    sizes = [chunk_samples_of(c, ctx.facts) for name, c in ctx.model.components.items()
             if name.startswith("preprocessor")]
    return max(sizes) if sizes else 1


# -- feeds (reference job) --------------------------------------------------------------------------

def preprocessor_feeds(ctx, component) -> Feeds:
    chunk = chunk_samples_of(component, ctx.facts)
    audio = ctx.memo("audio", lambda: eou_audio(ctx.facts["sample_rate"], multiple=_largest_chunk(ctx)))
    return Feeds(audio_chunks(audio, chunk), "espeak-ng speech, pause, speech, pause, chunk by chunk",
                 step_seconds=chunk / ctx.facts["sample_rate"])


def encoder_feeds(ctx, component) -> Feeds:
    suffix = component.name[len("streaming_encoder"):]
    pre = "preprocessor" + suffix
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


# -- metrics and plots ------------------------------------------------------------------------------------

def _max_abs_per_step(reference, candidate, name) -> list[float]:
    return [float(np.max(np.abs(np.asarray(r[name], np.float64) - np.asarray(c[name], np.float64))))
            for r, c in zip(reference, candidate)]


def encoder_chunk_metric(reference, candidate, facts) -> dict:
    """Per chunk: the encoder output's max error and whether every cache length agrees."""
    lens = [int(np.ravel(r["new_cache_last_channel_len"])[0]) == int(np.ravel(c["new_cache_last_channel_len"])[0])
            for r, c in zip(reference, candidate)]
    per_chunk = {f"{name}_max_abs_per_chunk": _max_abs_per_step(reference, candidate, name)
                 for name in ENCODER_FLOAT_OUTPUTS}
    return {"chunks": len(reference), **per_chunk,
            "cache_last_channel_len_agreement": float(np.mean(lens)) if lens else None}


def encoder_error_plot(out_dir, label: str, facts, reference: list, candidates: Mapping[str, list]) -> list:
    """Per chunk, the max |error| of the encoder output and of every float cache, per backend."""
    from kiln.validate.plots import _pyplot, _save

    plt = _pyplot()
    fig, axes = plt.subplots(len(candidates), 1, figsize=(10, 2.6 * len(candidates) + 0.6), squeeze=False)
    for ax, (backend, steps) in zip(axes[:, 0], candidates.items()):
        for name in ENCODER_FLOAT_OUTPUTS:
            errors = np.maximum(_max_abs_per_step(reference, steps, name), 1e-9)
            ax.semilogy(np.arange(len(errors)), errors, marker=".", linewidth=0.9, label=name)
        ax.set_title(f"{backend}: max |error| per chunk vs torch", fontsize=9)
        ax.set_ylabel("max |error|")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("chunk")
    fig.suptitle(f"{label}: encoder output and caches, chunk by chunk" +
                 (" [synthetic weights]" if facts.get("synthetic") else ""), fontsize=10)
    path = Path(out_dir) / f"{label}_chunk_errors.png"
    _save(fig, path)
    plt.close(fig)
    return [path]


def token_timeline_plot(out_dir, title: str, reference: dict, candidates: Mapping[str, dict]) -> list:
    """Per chunk size: tokens emitted per chunk and where <EOU> fires, torch vs each backend."""
    from kiln.validate.plots import _pyplot, _save

    plt = _pyplot()
    sizes = sorted(reference["by_chunk_size"])
    backends = {"torch_cpu": reference, **candidates}
    fig, axes = plt.subplots(len(sizes), 1, figsize=(11, 2.2 + 0.5 * len(backends) * len(sizes)), squeeze=False)
    for ax, size in zip(axes[:, 0], sizes):
        for row, (backend, result) in enumerate(backends.items()):
            entry = result["by_chunk_size"].get(size)
            if entry is None:
                continue
            chunks = np.arange(entry["chunks"])
            counts = np.asarray(entry["tokens_per_chunk"], float)
            ax.scatter(chunks[counts > 0], np.full(int((counts > 0).sum()), row), s=8 + 10 * counts[counts > 0],
                       color="#4c72b0", alpha=0.6, label="tokens (size = count)" if row == 0 else None)
            eou = entry["eou_chunks"]
            ax.scatter(eou, np.full(len(eou), row), marker="|", s=300, color="#c44e52", linewidths=2,
                       label="<EOU>" if row == 0 else None)
        ax.set_yticks(range(len(backends)), list(backends))
        ax.set_ylim(-0.7, len(backends) - 0.3)
        ax.set_title(f"{size} ({reference['by_chunk_size'][size]['chunk_ms']:g} ms chunks)", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("chunk")
    fig.suptitle(title, fontsize=10)
    path = Path(out_dir) / "end_to_end_token_timeline.png"
    _save(fig, path)
    plt.close(fig)
    return [path]


def joint_metric(reference, candidate, facts) -> dict:
    ref = np.array([int(np.ravel(s["token_id"])[0]) for s in reference])
    out = np.array([int(np.ravel(s["token_id"])[0]) for s in candidate])
    eou = facts.get("eou_id")
    return {"decisions": int(ref.size), "token_agreement": float(np.mean(ref == out)) if ref.size else None,
            "eou_decision_agreement": float(np.mean((ref == eou) == (out == eou))) if ref.size else None,
            "blank_fraction_reference": float(np.mean(ref == facts["blank_id"])) if ref.size else None}


def decoder_metric(reference, candidate, facts) -> dict:
    return {"steps": len(reference),
            "decoder_max_abs_per_step": _max_abs_per_step(reference, candidate, "decoder")}


# -- the cross-component task: EOU timing ----------------------------------------------------------------

def task_inputs(ctx) -> dict:
    """The audio, and each configured preprocessor's chunk in samples (``chunk_samples<suffix>``)."""
    audio = ctx.memo("audio", lambda: eou_audio(ctx.facts["sample_rate"], multiple=_largest_chunk(ctx)))
    chunks = {f"chunk_samples{name[len('preprocessor'):]}": np.array(chunk_samples_of(c, ctx.facts), np.int64)
              for name, c in ctx.model.components.items() if name.startswith("preprocessor")}
    return {"audio": audio, **chunks}


def task_run(components: Mapping[str, Callable], facts: Mapping[str, Any], inputs) -> dict:
    """Greedy RNNT for every chunk size with a preprocessor and a streaming encoder: token
    stream, the chunk of every token, the chunks where ``<EOU>`` fires, per-chunk encoder norms."""
    audio = np.asarray(inputs["audio"], np.float32).reshape(-1)
    out = {}
    for name in sorted(components):
        suffix = name[len("streaming_encoder"):]
        if not name.startswith("streaming_encoder") or f"chunk_samples{suffix}" not in inputs:
            continue
        chunk = int(np.asarray(inputs[f"chunk_samples{suffix}"]))
        result = run_pipeline(components, facts, audio, chunk, suffix)
        result.pop("mels"), result.pop("encoded")
        out[name] = result
    return {"synthetic": bool(facts.get("synthetic")), "eou_id": facts["eou_id"], "blank_id": facts["blank_id"],
            "by_chunk_size": out}


def eou_timing(reference: dict, candidate: dict) -> dict:
    """Agreement of one chunk size's result with the reference: tokens and EOU chunks."""
    ref_eou, out_eou = set(reference["eou_chunks"]), set(candidate["eou_chunks"])
    first_ref, first_out = reference["first_eou_chunk"], candidate["first_eou_chunk"]
    return {"tokens": agreement(reference["tokens"], candidate["tokens"]),
            "token_chunk_agreement":
                agreement(reference["token_chunks"], candidate["token_chunks"])["position_agreement"],
            "eou_chunks_reference": sorted(ref_eou), "eou_chunks": sorted(out_eou),
            "eou_chunk_agreement": 1.0 if not (ref_eou | out_eou) else len(ref_eou & out_eou) / len(ref_eou | out_eou),
            "first_eou_chunk_delta": None if first_ref is None or first_out is None else first_out - first_ref,
            "first_eou_same_chunk": first_ref == first_out}


def task_compare(reference: dict, result: dict) -> dict:
    return {name: eou_timing(reference["by_chunk_size"][name], entry)
            for name, entry in result["by_chunk_size"].items() if name in reference["by_chunk_size"]}


def quantization_eou_summary(reference: dict, results: Mapping[str, dict], component: str = "streaming_encoder",
                             min_agreement: float = 1.0) -> dict:
    """EOU timing agreement per quantization strategy of the encoder, and the recommendation.

    ``reference``: :func:`task_run` with the float encoder; ``results``: strategy -> :func:`task_run`
    with that strategy's quantized encoder (other components float). A strategy *degrades the EOU
    decision* when the chunks where ``<EOU>`` fires agree on less than ``min_agreement`` or the first
    EOU moves; when every int8 strategy does, the recommendation is fp16 weights only (what the
    converter's authors published for the real model)."""
    per_strategy = {}
    for strategy, result in results.items():
        compared = task_compare(reference, result)
        # a streaming encoder has its own chunk size's entry; a shared component (decoder, joint)
        # is judged on the unsuffixed chunk size
        timing = compared.get(component, compared.get(ENCODER_SPEC.name))
        if timing is None:
            continue
        degraded = timing["eou_chunk_agreement"] < min_agreement or not timing["first_eou_same_chunk"]
        per_strategy[strategy] = {**timing, "eou_degraded": degraded}
    int8 = {s: v for s, v in per_strategy.items() if s.startswith("int8")}
    degraded_int8 = sorted(s for s, v in int8.items() if v["eou_degraded"])
    if int8 and len(degraded_int8) == len(int8):
        recommendation = (f"fp16 only: every int8 strategy moves the end-of-utterance decision "
                          f"({', '.join(degraded_int8)})")
    elif degraded_int8:
        recommendation = f"avoid {', '.join(degraded_int8)}: it moves the end-of-utterance decision"
    else:
        recommendation = "no measured strategy moves the end-of-utterance decision on the validation audio"
    return {"component": component, "min_eou_chunk_agreement": min_agreement, "strategies": per_strategy,
            "recommendation": recommendation}


# -- faithfulness: the traced wrappers against NeMo itself (prepare job) ------------------------------------

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
    sizes = [chunk_samples_of(c, facts) for n, c in components.items() if n.startswith("preprocessor")]
    audio = eou_audio(facts["sample_rate"], multiple=max(sizes, default=1))
    offline_mel = _eou.nemo_offline_mel(source, audio)
    lag = facts["mel_lag_frames"]
    report = {}
    for name in sorted(predicts):
        if not name.startswith("streaming_encoder"):
            continue
        suffix = name[len("streaming_encoder"):]
        chunk = chunk_samples_of(components["preprocessor" + suffix], facts)
        geometry = _eou.chunk_geometry(facts, chunk)
        pipeline = run_pipeline({**predicts}, facts, audio, chunk, suffix)
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


# -- the family ------------------------------------------------------------------------------------------

def _plot_encoder(steps) -> np.ndarray:
    return np.array([float(np.linalg.norm(s["encoded_output"])) for s in steps])


def _preprocessor_spec(name: str) -> ComponentSpec:
    return ComponentSpec(
        name=name, inputs=PREPROCESSOR_IO[0], outputs=PREPROCESSOR_IO[1], wrapper=preprocessor_wrapper,
        feeds=preprocessor_feeds, state=(StatePair("audio_context", "new_audio_context"),),
        plot=PlotSeries("mean log-mel per chunk", lambda steps: np.array([float(np.mean(s["mel"])) for s in steps])),
        description="one chunk of audio -> un-normalised log-mel frames; STFT left context as state")


def _encoder_spec(name: str) -> ComponentSpec:
    return ComponentSpec(
        name=name, inputs=ENCODER_IO[0], outputs=ENCODER_IO[1], wrapper=encoder_wrapper, feeds=encoder_feeds,
        state=tuple(StatePair(c, f"new_{c}") for c in ENCODER_CACHES), example=encoder_example,
        metrics=(Metric("chunks", encoder_chunk_metric),),
        plot=PlotSeries("encoder output L2 norm per chunk", _plot_encoder), artifacts=encoder_error_plot,
        description="cache-aware FastConformer, one chunk; every cache an explicit input and output")


def _variants(base: str, make: Callable[[str], ComponentSpec]) -> tuple[ComponentSpec, ...]:
    return (make(base),) + tuple(make(f"{base}_{ms}ms") for ms in CHUNK_VARIANTS_MS)


PREPROCESSOR_SPEC = _preprocessor_spec("preprocessor")
ENCODER_SPEC = _encoder_spec("streaming_encoder")

COMPONENTS = (
    *_variants("preprocessor", _preprocessor_spec),
    *_variants("streaming_encoder", _encoder_spec),
    ComponentSpec(
        name="decoder", inputs=DECODER_IO[0], outputs=DECODER_IO[1], wrapper=decoder_wrapper,
        feeds=decoder_feeds, state=(StatePair("h_in", "h_out"), StatePair("c_in", "c_out")),
        example=decoder_example, metrics=(Metric("decoder", decoder_metric),),
        plot=PlotSeries("decoder output L2 norm per step",
                        lambda steps: np.array([float(np.linalg.norm(s["decoder"])) for s in steps])),
        description="RNNT prediction network, one step (U=1), explicit LSTM state"),
    ComponentSpec(
        name="joint_decision", inputs=JOINT_IO[0], outputs=JOINT_IO[1], wrapper=joint_wrapper,
        feeds=joint_feeds, metrics=(Metric("decisions", joint_metric),),
        plot=PlotSeries("token probability per step",
                        lambda steps: np.array([float(np.ravel(s["token_prob"])[0]) for s in steps])),
        description="RNNT joint, one frame: argmax token id (blank = vocabulary size) and its probability"),
)

TASK = Task(
    description="greedy RNNT on the host over the streamed chunks (decoder state kept across chunks): "
                "token stream and the chunks where <EOU> fires, per chunk size",
    requires=(("preprocessor", "streaming_encoder", "decoder", "joint_decision"),),
    inputs=task_inputs, run=task_run, compare=task_compare,
    quantization=lambda reference, results, component: quantization_eou_summary(reference, results, component),
    plot=token_timeline_plot)

FAMILY = FamilySpec(name=FAMILY_NAME, load=load, facts=facts, components=COMPONENTS,
                    build_random=build_random, task=TASK, faithfulness=faithfulness)
