"""Parakeet TDT (NVIDIA FastConformer + Token-and-Duration Transducer), from a NeMo ``.nemo`` file.

Source: ``nvidia/parakeet-tdt-0.6b-v3`` (``EncDecRNNTBPEModel`` with TDT loss/decoding), or a
random-initialised model of the same architecture built offline (:meth:`build_random`, synthetic).

Components (names, shapes and dtypes follow the consuming runtime, FluidAudio; every shape comes
from the checkpoint's config and the component's contract, none is a constant here):

``preprocessor``  ``audio_signal [1,N]`` fp32, ``audio_length [1]`` int32 -> ``mel [1,n_mels,F]``,
                  ``mel_length [1]`` int32. NeMo's STFT front end rewritten traceably
                  (:class:`kiln.models._nemo.MelFrontend`). Export it at float32 precision: the log
                  of near-zero power bins and the variance are where fp16 loses.
``encoder``       ``mel [1,n_mels,F]``, ``mel_length [1]`` -> ``encoder [1,d_model,T]``,
                  ``encoder_length [1]`` int32. FastConformer with fixed shapes: the relative
                  positional encodings are precomputed for exactly ``T`` frames; padding is masks.
``mel_encoder``   both fused: ``audio_signal``, ``audio_length`` -> ``encoder``, ``encoder_length``.
``decoder``       RNN-T prediction net, one step (U=1): ``targets [1,1]`` int32, ``target_length
                  [1]`` int32 (accepted for the consumer's contract, not used: U is always 1),
                  ``h_in``/``c_in [L,1,H]`` -> ``decoder [1,H,1]`` (the LSTM output, channels first
                  like the encoder, what the joint's ``pred`` projection consumes), ``h_out``,
                  ``c_out``. The blank id is the embedding's padding row (zeros): feeding blank with
                  zero states is NeMo's start-of-sequence step.
``joint``         ``encoder_step [1,d_model,1]``, ``decoder_step [1,H,1]`` -> ``logits [1,1,1,V+1+D]``:
                  raw joint output (``joint_net(enc(f) + pred(g))``), token logits then D duration
                  logits. NeMo's ``RNNTJoint.joint`` would log-softmax over all V+1+D values on
                  CPU; kiln calls the projections directly and leaves normalisation to consumers.
``joint_decision``  all frames at once: ``encoder [1,d_model,T]``, ``decoder_step [1,H,1]`` ->
                  ``token_id [1,T,1]`` int32 (argmax over the V+1 token logits, blank = V),
                  ``token_prob [1,T,1]`` fp32 (softmax over token logits only), ``duration [1,T,1]``
                  int32 (the duration *value* ``durations[argmax]``, in encoder frames).
``joint_decision_single_step``  the same for one frame (``encoder_step [1,d_model,1]``, outputs
                  ``[1,1,1]``): FluidAudio's ``JointDecisionv3``.

Traps handled deliberately: NeMo's ``@typecheck`` is bypassed (inner modules are called directly);
the joint's log-softmax path is skipped; ``pack_padded_sequence`` never appears (one step, explicit
LSTM state); attention masks use -10000 (NeMo's value, finite in fp16) and ``q`` is pre-scaled by
``1/sqrt(d_k)`` before ``q·k`` and ``q·p`` so the scores' intermediate products stay in fp16 range
(the unscaled ``q·k`` of a 1024-wide model is where fp16 overflows first); softmax of fully masked
padding rows is zeroed by multiplication, not by ``masked_fill`` on a NaN path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from kiln.errors import ModelError
from kiln.models import _nemo
from kiln.models._fastconformer import EncoderWrapper, JointDecision, JointLogits, MelEncoder, PredictionNet
from kiln.models._parakeet_random import build_random
from kiln.models._tdt import agreement, tdt_greedy
from kiln.family.spec import (ComponentSpec, Context, FamilySpec, Feeds, Metric, PlotSeries, StatePair, Task,
                              require_fact)
from kiln.sources import SourceRecord

SAMPLE_RATE = 16_000
DECODER_STEPS = 48     # validation: decoder steps streamed with state carried
JOINT_STEPS = 64       # validation: (frame, decoder output) pairs sent to the joint components
JOINT_DECISION_CALLS = 3
AUDIO_INPUTS = ("audio_signal", "audio_length")
FAMILY_NAME = "parakeet_tdt"


def nemo_durations(model) -> list[int]:
    """The TDT duration values, from wherever the checkpoint's config keeps them."""
    cfg = model.cfg
    for getter in (lambda: cfg.decoding.durations, lambda: cfg.loss.tdt_kwargs.durations,
                   lambda: cfg.model_defaults.tdt_durations):
        try:
            value = getter()
        except Exception:  # omegaconf raises on missing keys in struct mode
            value = None
        if value:
            return [int(d) for d in value]
    return []


# -- the source (prepare job only) ------------------------------------------------------------------

@dataclass(frozen=True)
class ParakeetSource:
    """A restored NeMo transducer model and the facts the components' shapes derive from."""

    model: Any  # nemo EncDecRNNTBPEModel, eval mode
    path: str = ""

    @property
    def featurizer(self):
        return _nemo.featurizer_of(self.model.preprocessor)

    @property
    def n_mels(self) -> int:
        return int(self.featurizer.fb.shape[1])

    @property
    def d_model(self) -> int:
        return int(self.model.encoder.d_model)

    @property
    def lstm(self) -> nn.LSTM:
        return self.model.decoder.prediction["dec_rnn"].lstm

    @property
    def pred_hidden(self) -> int:
        return int(self.model.decoder.pred_hidden)

    @property
    def c_shape(self) -> list[int]:
        return [self.lstm.num_layers, 1, self.lstm.hidden_size]

    @property
    def h_shape(self) -> list[int]:
        return [self.lstm.num_layers, 1, self.lstm.proj_size or self.lstm.hidden_size]

    @property
    def num_outputs(self) -> int:
        return int(self.model.joint.num_classes_with_blank)

    def mel_frames(self, num_samples: int) -> int:
        return _nemo.MelFrontend(self.featurizer, num_samples).out_frames

    def encoder_frames(self, mel_frames: int) -> int:
        return EncoderWrapper.output_frames(self.model.encoder, mel_frames)


def load_path(path) -> ParakeetSource:
    model = _nemo.restore_nemo(path)
    if not hasattr(model, "joint") or not hasattr(model, "decoder"):
        raise ModelError(f"{path}: not a transducer model ({type(model).__name__})")
    durations = nemo_durations(model)
    if not durations or model.joint.num_extra_outputs != len(durations):
        raise ModelError(f"{path}: {type(model).__name__} is not a TDT model (its joint declares "
                         "no durations)")
    return ParakeetSource(model=model, path=str(path))


def load(record: SourceRecord) -> ParakeetSource:
    return load_path(record.file("checkpoint"))


def _cfg_value(source: ParakeetSource, dotted: str) -> Any:
    node = source.model.cfg
    for part in dotted.split("."):
        node = node.get(part) if node is not None else None
    if node is None:
        raise ModelError(f"{source.path}: the checkpoint's config has no '{dotted}'")
    return node


def vocabulary(model, size: int) -> list[str]:
    """The token pieces by id (decoded text on the host, without NeMo)."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ModelError("the checkpoint has no tokenizer: decoded text needs its vocabulary")
    return [str(tokenizer.ids_to_tokens([i])[0]) for i in range(size)]


def facts(source: ParakeetSource) -> dict:
    model = source.model
    vocab_size = int(model.decoder.vocab_size)
    return {
        "sample_rate": int(_cfg_value(source, "sample_rate")),
        "hop_length": int(source.featurizer.hop_length),
        "n_mels": source.n_mels,
        "d_model": source.d_model,
        "pred_hidden": source.pred_hidden,
        "h_shape": source.h_shape,
        "c_shape": source.c_shape,
        "vocab_size": vocab_size,
        "blank_id": int(model.decoder.blank_idx),
        "num_outputs": source.num_outputs,
        "durations": nemo_durations(model),
        "max_symbols": int(_cfg_value(source, "decoding.greedy.max_symbols")),
        "vocabulary": vocabulary(model, vocab_size),
    }


def component_contracts(source: ParakeetSource, num_samples: int) -> dict:
    """Every component's exact ``{inputs: {name: {shape, dtype}}, outputs: ...}`` for ``source``
    and a window of ``num_samples`` (what config.yaml must declare)."""
    f = source.mel_frames(num_samples)
    t = source.encoder_frames(f)
    d, h, c = source.d_model, source.pred_hidden, source.num_outputs
    state_c, state_h = list(source.c_shape), list(source.h_shape)

    def spec(shape, dtype="float32"):
        return {"shape": list(shape), "dtype": dtype}

    audio = {"audio_signal": spec([1, num_samples]), "audio_length": spec([1], "int32")}
    enc_out = {"encoder": spec([1, d, t]), "encoder_length": spec([1], "int32")}
    decision = {"token_id": spec([1, t, 1], "int32"), "token_prob": spec([1, t, 1]),
                "duration": spec([1, t, 1], "int32")}
    return {
        "preprocessor": {"inputs": audio, "outputs": {"mel": spec([1, source.n_mels, f]),
                                                      "mel_length": spec([1], "int32")}},
        "encoder": {"inputs": {"mel": spec([1, source.n_mels, f]), "mel_length": spec([1], "int32")},
                    "outputs": enc_out},
        "mel_encoder": {"inputs": audio, "outputs": enc_out},
        "decoder": {"inputs": {"targets": spec([1, 1], "int32"), "target_length": spec([1], "int32"),
                               "h_in": spec(state_h), "c_in": spec(state_c)},
                    "outputs": {"decoder": spec([1, h, 1]), "h_out": spec(state_h), "c_out": spec(state_c)}},
        "joint": {"inputs": {"encoder_step": spec([1, d, 1]), "decoder_step": spec([1, h, 1])},
                  "outputs": {"logits": spec([1, 1, 1, c])}},
        "joint_decision": {"inputs": {"encoder": spec([1, d, t]), "decoder_step": spec([1, h, 1])},
                           "outputs": decision},
        "joint_decision_single_step": {
            "inputs": {"encoder_step": spec([1, d, 1]), "decoder_step": spec([1, h, 1])},
            "outputs": {"token_id": spec([1, 1, 1], "int32"), "token_prob": spec([1, 1, 1]),
                        "duration": spec([1, 1, 1], "int32")}},
    }


def check_shapes(component, expected: dict) -> None:
    """The configured contract must be what the checkpoint gives (shape and dtype, in order)."""
    for kind, specs in (("input", component.inputs), ("output", component.outputs)):
        got = [(s.name, list(s.shape), s.dtype) for s in specs]
        exp = [(n, v["shape"], v["dtype"]) for n, v in expected[kind + "s"].items()]
        if [g[1:] for g in got] != [e[1:] for e in exp]:
            raise ModelError(f"{component.model}/{component.name}: {kind}s {got} do not match what the "
                             f"checkpoint gives for this window: {exp} (shape and dtype, in order)")


def _samples(component) -> int:
    return int(component.inputs[0].shape[-1])


# -- wrappers: (source, component, facts) -> traceable module -------------------------------------

def preprocessor(source: ParakeetSource, component, facts) -> nn.Module:
    check_shapes(component, component_contracts(source, _samples(component))["preprocessor"])
    return _nemo.MelFrontend(source.featurizer, _samples(component))


def encoder(source: ParakeetSource, component, facts) -> nn.Module:
    mel_frames = int(component.inputs[0].shape[-1])
    contract = component_contracts(source, (mel_frames - 1) * source.featurizer.hop_length)["encoder"]
    contract["inputs"]["mel"]["shape"] = [1, source.n_mels, mel_frames]
    contract["outputs"]["encoder"]["shape"][-1] = source.encoder_frames(mel_frames)
    check_shapes(component, contract)
    return EncoderWrapper(source.model.encoder, mel_frames)


def mel_encoder(source: ParakeetSource, component, facts) -> nn.Module:
    check_shapes(component, component_contracts(source, _samples(component))["mel_encoder"])
    frontend = _nemo.MelFrontend(source.featurizer, _samples(component))
    return MelEncoder(frontend, EncoderWrapper(source.model.encoder, frontend.out_frames))


def _check_step_shapes(source: ParakeetSource, component, name: str, frames: int | None = None) -> None:
    contract = component_contracts(source, 16_000)[name]   # step components do not depend on the window
    if frames is not None:
        contract["inputs"]["encoder"]["shape"][-1] = frames
        for output in contract["outputs"].values():
            output["shape"][1] = frames
    check_shapes(component, contract)


def decoder(source: ParakeetSource, component, facts) -> nn.Module:
    _check_step_shapes(source, component, "decoder")
    return PredictionNet(source.model.decoder)


def joint(source: ParakeetSource, component, facts) -> nn.Module:
    _check_step_shapes(source, component, "joint")
    return JointLogits(source.model.joint)


def joint_decision(source: ParakeetSource, component, facts) -> nn.Module:
    _check_step_shapes(source, component, "joint_decision", frames=int(component.inputs[0].shape[-1]))
    return JointDecision(source.model.joint, facts["durations"])


def joint_decision_single_step(source: ParakeetSource, component, facts) -> nn.Module:
    _check_step_shapes(source, component, "joint_decision_single_step")
    return JointDecision(source.model.joint, facts["durations"])


# -- tracing examples: realistic values where they steer the trace ---------------------------------

def audio_example(component, facts, rng) -> dict:
    n = _samples(component)
    return {"audio_signal": (0.3 * rng.standard_normal((1, n))).astype(np.float32),
            "audio_length": np.array([n], np.int32)}


def mel_example(component, facts, rng) -> dict:
    frames = int(component.inputs[0].shape[-1])
    return {"mel": rng.standard_normal(component.inputs[0].shape).astype(np.float32),
            "mel_length": np.array([frames - 1], np.int32)}


def decoder_example(component, facts, rng) -> dict:
    return {"targets": rng.integers(0, 2, size=(1, 1)).astype(np.int32),
            "target_length": np.ones(1, np.int32),
            "h_in": rng.standard_normal(facts["h_shape"]).astype(np.float32),
            "c_in": rng.standard_normal(facts["c_shape"]).astype(np.float32)}


# -- validation feeds: 15 s of speech through the torch programs, greedy decoding traced ----------

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


# -- task metrics and plots -------------------------------------------------------------------------

def _flat(steps: list, name: str) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(s[name])) for s in steps])


def decision_metrics(reference: list, candidate: list, facts) -> dict:
    ref_tok, out_tok = _flat(reference, "token_id"), _flat(candidate, "token_id")
    return {"decisions": int(ref_tok.size),
            "token_agreement": float(np.mean(ref_tok == out_tok)),
            "duration_agreement": float(np.mean(_flat(reference, "duration") == _flat(candidate, "duration"))),
            "blank_fraction_reference": float(np.mean(ref_tok == facts["blank_id"]))}


def joint_argmax_metrics(reference: list, candidate: list, facts) -> dict:
    n_dur = len(facts["durations"])
    ref = np.stack([np.ravel(s["logits"]) for s in reference])
    out = np.stack([np.ravel(s["logits"]) for s in candidate]).astype(np.float32)
    return {"steps": int(ref.shape[0]),
            "token_argmax_agreement": float(np.mean(ref[:, :-n_dur].argmax(1) == out[:, :-n_dur].argmax(1))),
            "duration_argmax_agreement": float(np.mean(ref[:, -n_dur:].argmax(1) == out[:, -n_dur:].argmax(1)))}


def similarity(output: str, length: str) -> Callable:
    def metric(reference: list, candidate: list, facts) -> dict:
        ref = np.ravel(reference[0][output]).astype(np.float64)
        out = np.ravel(candidate[0][output]).astype(np.float64)
        denom = np.linalg.norm(ref) * np.linalg.norm(out)
        return {"cosine_similarity": float(ref @ out / denom) if denom else None,
                "length_equal": bool(np.array_equal(np.ravel(reference[0][length]),
                                                    np.ravel(candidate[0][length])))}
    return metric


def decoder_metrics(reference: list, candidate: list, facts) -> dict:
    ref = np.stack([np.ravel(s["decoder"]) for s in reference])
    out = np.stack([np.ravel(s["decoder"]) for s in candidate]).astype(np.float32)
    return {"steps": int(ref.shape[0]), "max_abs_decoder_error": float(np.max(np.abs(ref - out)))}


# -- the cross-component task: greedy decoding through every component ----------------------------

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


def compare_task(reference: dict, result: dict) -> dict:
    return {"vs_torch_cpu": agreement(reference["tokens"], result["tokens"]),
            "durations_vs_torch_cpu": agreement(reference["durations"], result["durations"])}


TASK = Task(
    description="TDT greedy decoding (host loop; decoder state carried per backend)",
    requires=(("preprocessor", "encoder", "decoder", "joint_decision_single_step"),
              ("mel_encoder", "decoder", "joint_decision_single_step")),
    inputs=task_inputs, run=run_task, compare=compare_task)


# -- the family: its components --------------------------------------------------------------------

AUDIO = ("audio_signal", "audio_length")
ENCODED = ("encoder", "encoder_length")
DECISION = ("token_id", "token_prob", "duration")
STEP = ("encoder_step", "decoder_step")

FAMILY = FamilySpec(
    name=FAMILY_NAME,
    load=load,
    facts=facts,
    build_random=build_random,
    task=TASK,
    components=(
        ComponentSpec("preprocessor", AUDIO, ("mel", "mel_length"), preprocessor, audio_feeds,
                      example=audio_example, metrics=(Metric("mel", similarity("mel", "mel_length")),)),
        ComponentSpec("encoder", ("mel", "mel_length"), ENCODED, encoder, mel_feeds, example=mel_example,
                      metrics=(Metric("encoder", similarity("encoder", "encoder_length")),)),
        ComponentSpec("mel_encoder", AUDIO, ENCODED, mel_encoder, audio_feeds, example=audio_example,
                      metrics=(Metric("encoder", similarity("encoder", "encoder_length")),)),
        ComponentSpec("decoder", ("targets", "target_length", "h_in", "c_in"), ("decoder", "h_out", "c_out"),
                      decoder, decoder_feeds, example=decoder_example,
                      state=(StatePair("h_in", "h_out"), StatePair("c_in", "c_out")),
                      metrics=(Metric("decoder", decoder_metrics),),
                      plot=PlotSeries("decoder output L2 norm per step",
                                      lambda steps: np.array([float(np.linalg.norm(s["decoder"])) for s in steps]))),
        ComponentSpec("joint", STEP, ("logits",), joint, joint_step_feeds,
                      metrics=(Metric("argmax", joint_argmax_metrics, rank_by="token_argmax_agreement"),),
                      plot=PlotSeries("max joint logit per step",
                                      lambda steps: np.array([float(np.max(s["logits"])) for s in steps]))),
        ComponentSpec("joint_decision", ("encoder", "decoder_step"), DECISION, joint_decision,
                      joint_decision_feeds, metrics=(Metric("decisions", decision_metrics, rank_by="token_agreement"),)),
        ComponentSpec("joint_decision_single_step", STEP, DECISION, joint_decision_single_step,
                      joint_step_feeds, metrics=(Metric("decisions", decision_metrics, rank_by="token_agreement"),),
                      plot=PlotSeries("token probability per step",
                                      lambda steps: np.array([float(np.ravel(s["token_prob"])[0]) for s in steps]))),
    ),
)
