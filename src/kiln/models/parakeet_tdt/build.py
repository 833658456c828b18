"""Parakeet TDT's build part: restore the ``.nemo`` checkpoint, the facts, the component wrappers
(FastConformer encoder, prediction net, joint heads: :mod:`kiln.models._fastconformer`) with the
shapes the contracts give, and their tracing inputs. See the package docstring for the components."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

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
