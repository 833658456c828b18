"""Parakeet TDT's build part: restore the ``.nemo`` checkpoint, the facts, the component wrappers
(FastConformer encoder, prediction net, joint heads: :mod:`kiln.models._fastconformer`) with the
shapes the contracts give, and their tracing inputs. See the package docstring for the components."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from torch import nn

from kiln.family.contract import resolve
from kiln.foundation.errors import ModelError
from kiln.models import _nemo
from kiln.models._fastconformer import EncoderWrapper, JointDecision, JointLogits, MelEncoder, PredictionNet
from kiln.models.parakeet_tdt.contract import CONTRACTS, WINDOWED, _samples, shape_of
from kiln.sources import SourceRecord


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


def config_blocks(facts: Mapping[str, Any], seconds: int) -> dict:
    """Every component's config.yaml block (``options`` and the shapes :data:`CONTRACTS` resolve to)
    for a ``seconds`` window: what a test or benchmark builds a config from."""
    blocks = {}
    for name, contract in CONTRACTS.items():
        options = {"seconds": seconds} if name in WINDOWED else {}
        blocks[name] = {**({"options": options} if options else {}), **resolve(contract, facts, options)}
    return blocks


def _same_frames(component, built: int, expected: int, what: str) -> None:
    if built != expected:
        raise ModelError(f"{component.model}/{component.name}: the checkpoint's {what} gives {built} frames, "
                         f"the family's contract {expected} (kiln.models.parakeet_tdt.contract.window_values "
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
