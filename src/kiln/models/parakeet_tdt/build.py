"""Parakeet TDT's build part: restore the ``.nemo`` checkpoint, the facts, the component wrappers
(FastConformer encoder, prediction net, joint heads: :mod:`kiln.models._fastconformer`) with the
shapes the contracts give, and their tracing inputs. See the package docstring for the components."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from torch import nn

from kiln.family.contract import Axis, Contract, Tensor, f32, i32, resolve, samples_of
from kiln.family.spec import require_fact
from kiln.foundation.errors import ModelError
from kiln.models import _nemo
from kiln.models._fastconformer import EncoderWrapper, JointDecision, JointLogits, MelEncoder, PredictionNet
from kiln.sources import SourceRecord


SAMPLE_RATE = 16_000


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
        **_frontend_facts(source),
    }


def _frontend_facts(source: ParakeetSource) -> dict:
    """What the window's frame counts derive from: NeMo's STFT framing (``n_fft``, its padding, the
    ``pad_to`` rounding) and the encoder's conv subsampling (NeMo's ``calc_length`` terms)."""
    front = _nemo.MelFrontend(source.featurizer, source.featurizer.hop_length)
    pad_to = source.featurizer.pad_to
    # pad_to "max" pads every window to the featurizer's max_length frames
    pad = {"mel_min_frames": int(source.featurizer.max_length)} if pad_to == "max" else \
        {"mel_pad_to": int(pad_to) if isinstance(pad_to, int) and pad_to > 0 else 0}
    pre = source.model.encoder.pre_encode
    if isinstance(pre, nn.Linear):
        subsampling = {"repeats": 0, "all_paddings": 0, "kernel_size": 1, "stride": 1, "ceil_mode": False}
    elif not all(hasattr(pre, a) for a in ("_sampling_num", "_left_padding", "_right_padding", "_kernel_size",
                                            "_stride", "_ceil_mode")):
        raise ModelError(f"{source.path}: the encoder's {type(pre).__name__} subsampling is not a strided "
                         "convolution stack (ConvSubsampling); its frame count has no contract expression")
    else:
        subsampling = {"repeats": int(pre._sampling_num), "all_paddings": int(pre._left_padding + pre._right_padding),
                       "kernel_size": int(pre._kernel_size), "stride": int(pre._stride),
                       "ceil_mode": bool(pre._ceil_mode)}
    return {"n_fft": front.n_fft, "stft_pad": front.stft_pad, **pad, "subsampling": subsampling}


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


def config_blocks(facts: Mapping[str, Any], seconds: int) -> dict:
    """Every component's config.yaml block (``options`` and the shapes :data:`CONTRACTS` resolve to)
    for a ``seconds`` window: what a test or benchmark builds a config from."""
    blocks = {}
    for name, contract in CONTRACTS.items():
        options = {"seconds": seconds} if name in WINDOWED else {}
        blocks[name] = {**({"options": options} if options else {}), **resolve(contract, facts, options)}
    return blocks


def shape_of(component, name: str) -> tuple[int, ...]:
    """The shape of ``component``'s input ``name`` (its contract, checked against the family's)."""
    return next(tuple(t.shape) for t in component.inputs if t.name == name)


def _samples(component) -> int:
    return int(shape_of(component, "audio_signal")[-1])


def _same_frames(component, built: int, expected: int, what: str) -> None:
    if built != expected:
        raise ModelError(f"{component.model}/{component.name}: the checkpoint's {what} gives {built} frames, "
                         f"the family's contract {expected} (kiln.models.parakeet_tdt.build.window_values "
                         f"and the checkpoint disagree)")


def preprocessor(source: ParakeetSource, component, facts) -> nn.Module:
    frontend = _nemo.MelFrontend(source.featurizer, _samples(component))
    _same_frames(component, frontend.out_frames, component.outputs[0].shape[-1], "STFT framing")
    return frontend


def encoder(source: ParakeetSource, component, facts) -> nn.Module:
    wrapper = EncoderWrapper(source.model.encoder, int(shape_of(component, "mel")[-1]))
    _same_frames(component, wrapper.frames, component.outputs[0].shape[-1], "subsampling")
    return wrapper


def mel_encoder(source: ParakeetSource, component, facts) -> nn.Module:
    frontend = _nemo.MelFrontend(source.featurizer, _samples(component))
    wrapper = EncoderWrapper(source.model.encoder, frontend.out_frames)
    _same_frames(component, wrapper.frames, component.outputs[0].shape[-1], "STFT framing and subsampling")
    return MelEncoder(frontend, wrapper)


def decoder(source: ParakeetSource, component, facts) -> nn.Module:
    return PredictionNet(source.model.decoder)


def joint(source: ParakeetSource, component, facts) -> nn.Module:
    return JointLogits(source.model.joint)


def joint_decision(source: ParakeetSource, component, facts) -> nn.Module:
    return JointDecision(source.model.joint, facts["durations"])


def joint_decision_single_step(source: ParakeetSource, component, facts) -> nn.Module:
    return JointDecision(source.model.joint, facts["durations"])


def audio_example(component, facts, rng) -> dict:
    n = _samples(component)
    return {"audio_signal": (0.3 * rng.standard_normal((1, n))).astype(np.float32),
            "audio_length": np.array([n], np.int32)}


def mel_example(component, facts, rng) -> dict:
    frames = int(shape_of(component, "mel")[-1])
    return {"mel": rng.standard_normal(shape_of(component, "mel")).astype(np.float32),
            "mel_length": np.array([frames - 1], np.int32)}


def decoder_example(component, facts, rng) -> dict:
    return {"targets": rng.integers(0, 2, size=(1, 1)).astype(np.int32),
            "target_length": np.ones(1, np.int32),
            "h_in": rng.standard_normal(facts["h_shape"]).astype(np.float32),
            "c_in": rng.standard_normal(facts["c_shape"]).astype(np.float32)}
