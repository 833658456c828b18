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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from kiln.config import ComponentConfig, ModelConfig
from kiln.errors import ModelError
from kiln.models import _nemo
from kiln.models.base import ModelFamily
from kiln.sources import SourceRecord

SAMPLE_RATE = 16_000
WINDOW_SECONDS = 15.0
MASK_VALUE = -10000.0  # NeMo's INF_VAL; finite in fp16 (max 65504)
DECODER_STEPS = 48     # validation: decoder steps streamed with state carried
JOINT_STEPS = 64       # validation: (frame, decoder output) pairs sent to the joint components
JOINT_DECISION_CALLS = 3

COMPONENTS = ("preprocessor", "encoder", "mel_encoder", "decoder", "joint", "joint_decision",
              "joint_decision_single_step")

# -- architectures of random-initialised models -----------------------------------------------------

ARCHITECTURES: dict[str, dict[str, Any]] = {
    # for tests: seconds to build, export and run
    "tiny": {"n_mels": 80, "d_model": 64, "n_layers": 2, "n_heads": 4, "subsampling_factor": 8,
             "subsampling_conv_channels": 32, "ff_expansion_factor": 4, "conv_kernel_size": 9,
             "vocab_size": 48, "pred_hidden": 64, "pred_rnn_layers": 2, "joint_hidden": 64,
             "durations": [0, 1, 2, 3, 4], "use_bias": True, "xscaling": True, "max_symbols": 10},
    # the published v3 architecture (0.6B parameters); for the benchmark
    "full": {"n_mels": 128, "d_model": 1024, "n_layers": 24, "n_heads": 8, "subsampling_factor": 8,
             "subsampling_conv_channels": 256, "ff_expansion_factor": 4, "conv_kernel_size": 9,
             "vocab_size": 8192, "pred_hidden": 640, "pred_rnn_layers": 2, "joint_hidden": 640,
             "durations": [0, 1, 2, 3, 4], "use_bias": False, "xscaling": True, "max_symbols": 10},
}

TOKENIZER_TEXT = (
    "The quick brown fox jumps over the lazy dog.",
    "Voice activity detection finds the parts of a recording that contain speech.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Core ML models run on the neural engine of iPhone and Mac.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese.",
)


def nemo_config(arch: Mapping[str, Any], tokenizer_dir: Path) -> dict:
    """An ``EncDecRNNTBPEModel`` config (TDT loss and greedy TDT decoding) for ``arch``."""
    durations = list(arch["durations"])
    return {
        "sample_rate": SAMPLE_RATE,
        "tokenizer": {"dir": str(tokenizer_dir), "type": "bpe"},
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": SAMPLE_RATE, "normalize": "per_feature", "window_size": 0.025,
            "window_stride": 0.01, "window": "hann", "features": arch["n_mels"], "n_fft": 512,
            "log": True, "frame_splicing": 1, "dither": 1.0e-5, "pad_to": 0, "pad_value": 0.0,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder",
            "feat_in": arch["n_mels"], "feat_out": -1, "n_layers": arch["n_layers"],
            "d_model": arch["d_model"], "use_bias": arch["use_bias"], "subsampling": "dw_striding",
            "subsampling_factor": arch["subsampling_factor"],
            "subsampling_conv_channels": arch["subsampling_conv_channels"],
            "causal_downsampling": False, "ff_expansion_factor": arch["ff_expansion_factor"],
            "self_attention_model": "rel_pos", "n_heads": arch["n_heads"], "att_context_size": [-1, -1],
            "att_context_style": "regular", "xscaling": arch["xscaling"], "untie_biases": True,
            "pos_emb_max_len": 5000, "conv_kernel_size": arch["conv_kernel_size"],
            "conv_norm_type": "batch_norm", "conv_context_size": None, "dropout": 0.1,
            "dropout_pre_encoder": 0.1, "dropout_emb": 0.0, "dropout_att": 0.1,
        },
        "decoder": {
            "_target_": "nemo.collections.asr.modules.RNNTDecoder", "normalization_mode": None,
            "random_state_sampling": False, "blank_as_pad": True,
            "prednet": {"pred_hidden": arch["pred_hidden"], "pred_rnn_layers": arch["pred_rnn_layers"],
                        "t_max": None, "dropout": 0.2},
        },
        "joint": {
            "_target_": "nemo.collections.asr.modules.RNNTJoint", "log_softmax": None,
            "preserve_memory": False, "fuse_loss_wer": False, "fused_batch_size": 4,
            "jointnet": {"joint_hidden": arch["joint_hidden"], "activation": "relu", "dropout": 0.2},
            "num_extra_outputs": len(durations),
        },
        "decoding": {"strategy": "greedy", "model_type": "tdt", "durations": durations,
                     "greedy": {"max_symbols": arch["max_symbols"]}},
        "loss": {"loss_name": "tdt", "tdt_kwargs": {"fastemit_lambda": 0.0, "clamp": -1.0,
                                                     "durations": durations, "sigma": 0.02, "omega": 0.1}},
        "model_defaults": {"enc_hidden": arch["d_model"], "pred_hidden": arch["pred_hidden"],
                           "joint_hidden": arch["joint_hidden"], "tdt_durations": durations,
                           "num_tdt_durations": len(durations)},
        "optim": None,
        "kiln": {"synthetic": True, "note": "random-initialised by kiln; not a trained model"},
    }


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


# -- the source ------------------------------------------------------------------------------------

@dataclass
class ParakeetSource:
    """A restored NeMo TDT model and the facts the components' shapes derive from."""

    model: Any  # nemo EncDecRNNTBPEModel, eval mode
    path: str = ""
    cache: dict = field(default_factory=dict, repr=False)

    @property
    def cfg(self):
        return self.model.cfg

    @property
    def featurizer(self):
        return _nemo.featurizer_of(self.model.preprocessor)

    @property
    def n_mels(self) -> int:
        return int(self.featurizer.fb.shape[1])

    @property
    def hop_length(self) -> int:
        return int(self.featurizer.hop_length)

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
    def state_shape(self) -> tuple[int, int, int]:
        lstm = self.lstm
        return (lstm.num_layers, 1, lstm.hidden_size)

    @property
    def h_shape(self) -> tuple[int, int, int]:
        lstm = self.lstm
        return (lstm.num_layers, 1, lstm.proj_size or lstm.hidden_size)

    @property
    def durations(self) -> list[int]:
        return nemo_durations(self.model)

    @property
    def vocab_size(self) -> int:
        return int(self.model.decoder.vocab_size)

    @property
    def blank_id(self) -> int:
        return int(self.model.decoder.blank_idx)

    @property
    def num_outputs(self) -> int:
        return int(self.model.joint.num_classes_with_blank)

    @property
    def max_symbols(self) -> int:
        greedy = (self.cfg.get("decoding") or {}).get("greedy") or {}
        value = greedy.get("max_symbols", 10)
        return int(value) if value else 10

    def mel_frames(self, num_samples: int) -> int:
        return mel_frontend_for(self, num_samples).out_frames

    def encoder_frames(self, mel_frames: int) -> int:
        return EncoderWrapper.output_frames(self.model.encoder, mel_frames)


def mel_frontend_for(source: ParakeetSource, num_samples: int) -> _nemo.MelFrontend:
    key = ("mel", num_samples)
    if key not in source.cache:
        source.cache[key] = _nemo.MelFrontend(source.featurizer, num_samples).eval()
    return source.cache[key]


def component_contracts(source: ParakeetSource, num_samples: int = int(WINDOW_SECONDS * SAMPLE_RATE)) -> dict:
    """Every component's exact ``{inputs: {name: {shape, dtype}}, outputs: ...}`` for ``source``
    and a window of ``num_samples`` (what config.yaml must declare)."""
    f = source.mel_frames(num_samples)
    t = source.encoder_frames(f)
    d, h, c = source.d_model, source.pred_hidden, source.num_outputs
    state_c, state_h = list(source.state_shape), list(source.h_shape)

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


# -- component wrappers ----------------------------------------------------------------------------

class EncoderWrapper(nn.Module):
    """NeMo's ``ConformerEncoder.forward_internal`` for a fixed number of mel frames, with the
    layers' self-attention re-expressed fp16-safely (same weights, same math)."""

    def __init__(self, encoder, mel_frames: int):
        super().__init__()
        if encoder.self_attention_model != "rel_pos":
            raise ModelError(f"encoder: self_attention_model={encoder.self_attention_model!r} is not "
                             "supported (rel_pos only)")
        if encoder.att_context_style != "regular":
            raise ModelError(f"encoder: att_context_style={encoder.att_context_style!r} is not supported")
        if getattr(encoder, "reduction_position", None) is not None:
            raise ModelError("encoder: in-encoder reduction subsampling is not supported")
        self.encoder = encoder
        self.mel_frames = int(mel_frames)
        self.frames = self.output_frames(encoder, mel_frames)
        t = self.frames
        pos_enc = encoder.pos_enc
        pos_enc.extend_pe(t, torch.device("cpu"), torch.float32)
        center = pos_enc.pe.size(1) // 2 + 1
        self.register_buffer("pos_emb", pos_enc.pe[:, center - t:center + t - 1].detach().clone())
        self.xscale = float(pos_enc.xscale) if pos_enc.xscale else None
        left, right = (list(encoder.att_context_size) + [-1, -1])[:2]
        band = torch.ones(t, t, dtype=torch.bool)
        if left >= 0:
            band = band.triu(diagonal=-left)
        if right >= 0:
            band = band.tril(diagonal=right)
        self.register_buffer("band", band.unsqueeze(0).to(torch.float32))  # 1 = may attend

    @staticmethod
    def output_frames(encoder, mel_frames: int) -> int:
        with torch.no_grad():
            x = torch.zeros(1, mel_frames, encoder._feat_in)
            if isinstance(encoder.pre_encode, nn.Linear):
                return mel_frames
            out, _ = encoder.pre_encode(x=x, lengths=torch.tensor([mel_frames]))
        return int(out.shape[1])

    def attention(self, mha, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        h, d_k = mha.h, mha.d_k
        scale = 1.0 / float(mha.s_d_k)
        q = mha.linear_q(x).view(b, t, h, d_k) * scale
        k = mha.linear_k(x).view(b, t, h, d_k).transpose(1, 2)
        v = mha.linear_v(x).view(b, t, h, d_k).transpose(1, 2)
        p = mha.linear_pos(self.pos_emb).view(1, -1, h, d_k).transpose(1, 2)      # [1, h, 2t-1, d_k]
        q_u = (q + mha.pos_bias_u * scale).transpose(1, 2)
        q_v = (q + mha.pos_bias_v * scale).transpose(1, 2)
        matrix_ac = torch.matmul(q_u, k.transpose(-2, -1))                          # [b, h, t, t]
        matrix_bd = mha.rel_shift(torch.matmul(q_v, p.transpose(-2, -1)))[:, :, :, :t]
        scores = matrix_ac + matrix_bd
        keep4 = keep.unsqueeze(1)                                                   # [b, 1, t, t]
        scores = torch.where(keep4 > 0.5, scores, torch.full_like(scores, MASK_VALUE))
        attn = torch.softmax(scores, dim=-1) * keep4
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, t, h * d_k)
        return mha.linear_out(out)

    def layer(self, layer, x, keep, pad_mask):
        residual = x
        y = layer.feed_forward1(layer.norm_feed_forward1(x))
        residual = residual + y * layer.fc_factor
        y = self.attention(layer.self_attn, layer.norm_self_att(residual), keep)
        residual = residual + y
        y = layer.conv(layer.norm_conv(residual), pad_mask=pad_mask)
        residual = residual + y
        y = layer.feed_forward2(layer.norm_feed_forward2(residual))
        residual = residual + y * layer.fc_factor
        return layer.norm_out(residual)

    def forward(self, mel: torch.Tensor, mel_length: torch.Tensor):
        enc = self.encoder
        x = mel.transpose(1, 2)
        length = mel_length.to(torch.int32)
        if isinstance(enc.pre_encode, nn.Linear):
            x = enc.pre_encode(x)
        else:
            x, length = enc.pre_encode(x=x, lengths=length)
        length = length.to(torch.int32)
        if self.xscale:
            x = x * self.xscale
        index = torch.arange(self.frames, dtype=torch.int32).unsqueeze(0)
        valid = index < length.unsqueeze(1)                                      # [1, t]
        valid_f = valid.to(x.dtype)
        keep = valid_f.unsqueeze(2) * valid_f.unsqueeze(1) * self.band           # [1, t, t]
        pad_mask = ~valid
        for layer in enc.layers:
            x = self.layer(layer, x, keep, pad_mask)
        if enc.out_proj is not None:
            x = enc.out_proj(x)
        return x.transpose(1, 2), length


class MelEncoder(nn.Module):
    def __init__(self, frontend: _nemo.MelFrontend, encoder: EncoderWrapper):
        super().__init__()
        self.frontend = frontend
        self.encoder = encoder

    def forward(self, audio_signal, audio_length):
        mel, mel_length = self.frontend(audio_signal, audio_length)
        return self.encoder(mel, mel_length)


class PredictionNet(nn.Module):
    """One step of the RNN-T prediction network with explicit LSTM state."""

    def __init__(self, decoder):
        super().__init__()
        self.embed = decoder.prediction["embed"]
        self.lstm = decoder.prediction["dec_rnn"].lstm

    def forward(self, targets, target_length, h_in, c_in):
        y = self.embed(targets.to(torch.int32))                                   # [1, 1, H]
        g, (h, c) = self.lstm(y.transpose(0, 1), (h_in, c_in))                    # [1, 1, H]
        return g.permute(1, 2, 0), h, c


class JointLogits(nn.Module):
    """``joint_net(enc(f) + pred(g))`` without NeMo's log-softmax, frames x one decoder step."""

    def __init__(self, joint):
        super().__init__()
        self.enc = joint.enc
        self.pred = joint.pred
        self.joint_net = joint.joint_net

    def forward(self, encoder, decoder_step):
        f = self.enc(encoder.transpose(1, 2))                                    # [1, T, J]
        g = self.pred(decoder_step.transpose(1, 2))                              # [1, 1, J]
        return self.joint_net(f.unsqueeze(2) + g.unsqueeze(1))                   # [1, T, 1, C]


class JointDecision(nn.Module):
    """Token id (argmax over V+1), its softmax probability, and the duration value."""

    def __init__(self, joint, durations: list[int]):
        super().__init__()
        self.logits = JointLogits(joint)
        self.n_durations = len(durations)
        self.register_buffer("durations", torch.tensor(durations, dtype=torch.int32))

    def forward(self, encoder, decoder_step):
        logits = self.logits(encoder, decoder_step)[:, :, 0, :]                  # [1, T, C]
        token_logits = logits[:, :, :-self.n_durations]
        duration_logits = logits[:, :, -self.n_durations:]
        token_id = torch.argmax(token_logits, dim=-1, keepdim=True)
        probs = torch.softmax(token_logits, dim=-1)
        token_prob = torch.gather(probs, 2, token_id)
        duration_index = torch.argmax(duration_logits, dim=-1, keepdim=True)
        duration = self.durations[duration_index.reshape(-1)].reshape(duration_index.shape)
        return token_id.to(torch.int32), token_prob, duration.to(torch.int32)


# -- host-side TDT greedy decoding --------------------------------------------------------------------

def tdt_greedy(encoder: np.ndarray, encoder_length: int, decoder: Callable, joint_step: Callable,
               *, blank_id: int, state_shape, h_shape, max_symbols: int, record: list | None = None) -> dict:
    """NeMo's ``GreedyTDTInfer._greedy_decode`` on the host.

    ``encoder [d_model, T]``; ``decoder(target, h, c) -> (g [1,H,1], h, c)``; ``joint_step(f [1,D,1],
    g) -> (token_id, token_prob, duration)``. The decoder state advances only when a non-blank token
    is emitted (a blank keeps the last non-blank token's output and state); the start step feeds
    blank (the embedding's zero padding row) with zero state. After a blank with duration 0 the frame
    advances by 1; after ``max_symbols`` symbols at one frame it advances by 1 as well (NeMo's rule).
    """
    h = np.zeros(h_shape, np.float32)
    c = np.zeros(state_shape, np.float32)
    g, h_next, c_next = decoder(blank_id, h, c)
    tokens, durations, frames, probs = [], [], [], []
    t = 0
    while t < encoder_length:
        symbols = 0
        skip = 1
        need_loop = True
        while need_loop and symbols < max_symbols:
            f = encoder[:, t:t + 1][None].astype(np.float32)
            token, prob, skip = joint_step(f, g)
            if record is not None:
                record.append({"frame": t, "decoder_step": g, "encoder_step": f})
            if token != blank_id:
                tokens.append(int(token))
                durations.append(int(skip))
                frames.append(int(t))
                probs.append(float(prob))
                h, c = h_next, c_next
                g, h_next, c_next = decoder(int(token), h, c)
            symbols += 1
            t += skip
            need_loop = skip == 0
        if symbols == max_symbols:
            t += 1
    return {"tokens": tokens, "durations": durations, "frames": frames, "token_probs": probs}


def edit_distance(a: list, b: list) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def agreement(reference: list, candidate: list) -> dict:
    n = max(len(reference), len(candidate))
    same = sum(1 for x, y in zip(reference, candidate) if x == y)
    return {"position_agreement": 1.0 if n == 0 else same / n,
            "exact_match": list(reference) == list(candidate),
            "edit_distance": edit_distance(list(reference), list(candidate))}


def _arr(out: Mapping, name: str) -> np.ndarray:
    return np.asarray(out[name])


# -- the family ----------------------------------------------------------------------------------------

class ParakeetTDTFamily(ModelFamily):
    name = "parakeet_tdt"
    components = COMPONENTS
    sample_rate = SAMPLE_RATE
    validation_seconds = WINDOW_SECONDS

    def __init__(self):
        #: model name -> the source its components were last built from (validation derives
        #: decoder/joint inputs from the torch pipeline on the same source)
        self._sources: dict[str, ParakeetSource] = {}

    # -- source ------------------------------------------------------------------------------------

    def load_source(self, record: SourceRecord) -> ParakeetSource:
        path = record.file("checkpoint")
        return self.load_path(path)

    def load_path(self, path: str | Path) -> ParakeetSource:
        model = _nemo.restore_nemo(path)
        if not hasattr(model, "joint") or not hasattr(model, "decoder"):
            raise ModelError(f"{path}: not a transducer model ({type(model).__name__})")
        durations = nemo_durations(model)
        if not durations or model.joint.num_extra_outputs != len(durations):
            raise ModelError(f"{path}: {type(model).__name__} is not a TDT model (its joint declares "
                             "no durations)")
        return ParakeetSource(model=model, path=str(path))

    def build_random(self, architecture: str, *, seed: int, overrides: Mapping[str, Any],
                     out_dir: Path) -> Path:
        if architecture not in ARCHITECTURES:
            raise ModelError(f"parakeet_tdt: unknown architecture '{architecture}' "
                             f"(known: {', '.join(ARCHITECTURES)})")
        arch = dict(ARCHITECTURES[architecture])
        unknown = sorted(set(overrides) - set(arch))
        if unknown:
            raise ModelError(f"parakeet_tdt: unknown architecture override(s) {unknown} "
                             f"(allowed: {', '.join(sorted(arch))})")
        arch.update(overrides)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tok_dir = _nemo.build_sentencepiece(out_dir / f"tokenizer_{architecture}", int(arch["vocab_size"]),
                                            TOKENIZER_TEXT)
        from omegaconf import OmegaConf

        with _nemo.quiet_nemo():
            from nemo.collections.asr.models import EncDecRNNTBPEModel

            torch.manual_seed(int(seed))
            model = EncDecRNNTBPEModel(cfg=OmegaConf.create(nemo_config(arch, tok_dir)))
            model.eval()
            out = out_dir / f"parakeet_tdt_{architecture}_seed{seed}.nemo"
            model.save_to(str(out))
        return out

    # -- components --------------------------------------------------------------------------------

    def _check_shapes(self, source: ParakeetSource, component: ComponentConfig, expected: dict) -> None:
        for kind, specs in (("input", component.inputs), ("output", component.outputs)):
            want = expected[kind + "s"]
            got = [(s.name, list(s.shape), s.dtype) for s in specs]
            exp = [(n, v["shape"], v["dtype"]) for n, v in want.items()]
            if [g[1:] for g in got] != [e[1:] for e in exp]:
                raise ModelError(
                    f"{component.model}/{component.name}: {kind}s {got} do not match what the "
                    f"checkpoint gives for this window: {exp} (shape and dtype, in order)")

    def build_component(self, source: ParakeetSource, component: ComponentConfig) -> nn.Module:
        self.check_component(component)
        self._sources[component.model] = source
        name = component.name
        if name in ("preprocessor", "mel_encoder"):
            num_samples = component.inputs[0].shape[-1]
        elif name == "encoder":
            num_samples = None
        else:
            num_samples = int(WINDOW_SECONDS * SAMPLE_RATE)
        if name == "encoder":
            mel_frames = component.inputs[0].shape[-1]
            contracts = component_contracts(source, (mel_frames - 1) * source.hop_length)
            contract = contracts["encoder"]
            contract["inputs"]["mel"]["shape"] = [1, source.n_mels, mel_frames]
            contract["outputs"]["encoder"]["shape"][-1] = source.encoder_frames(mel_frames)
        else:
            contract = component_contracts(source, num_samples)[name]
        if name == "joint_decision":
            t = component.inputs[0].shape[-1]
            contract["inputs"]["encoder"]["shape"][-1] = t
            for o in contract["outputs"].values():
                o["shape"][1] = t
        self._check_shapes(source, component, contract)
        model = source.model
        if name == "preprocessor":
            wrapper = _nemo.MelFrontend(source.featurizer, num_samples)
        elif name == "encoder":
            wrapper = EncoderWrapper(model.encoder, component.inputs[0].shape[-1])
        elif name == "mel_encoder":
            frontend = _nemo.MelFrontend(source.featurizer, num_samples)
            wrapper = MelEncoder(frontend, EncoderWrapper(model.encoder, frontend.out_frames))
        elif name == "decoder":
            wrapper = PredictionNet(model.decoder)
        elif name == "joint":
            wrapper = JointLogits(model.joint)
        else:
            wrapper = JointDecision(model.joint, source.durations)
        return wrapper.eval()

    def example_inputs(self, component: ComponentConfig, seed: int = 0) -> dict[str, np.ndarray]:
        """Realistic values where they steer the trace: full-length audio/mel, valid token ids."""
        rng = np.random.default_rng(seed)
        out = {}
        for spec in component.inputs:
            if spec.name in ("audio_length", "mel_length"):
                full = component.inputs[0].shape[-1]
                out[spec.name] = np.full(spec.shape, full if spec.name == "audio_length" else full - 1,
                                         dtype=np.int32)
            elif spec.name == "targets":
                out[spec.name] = rng.integers(0, 2, size=spec.shape).astype(np.int32)
            elif spec.name == "target_length":
                out[spec.name] = np.ones(spec.shape, dtype=np.int32)
            elif spec.dtype == "int32":
                out[spec.name] = rng.integers(0, 2, size=spec.shape).astype(np.int32)
            else:
                scale = 0.3 if spec.name == "audio_signal" else 1.0
                out[spec.name] = (scale * rng.standard_normal(spec.shape)).astype(np.float32)
        return out

    # -- the torch reference pipeline (validation inputs for every backend) ------------------------

    def _source_for(self, model_name: str) -> ParakeetSource:
        try:
            return self._sources[model_name]
        except KeyError:
            raise ModelError(f"parakeet_tdt: build a component of '{model_name}' (build_component) "
                             "before validating it: the validation inputs of the decoder and joint "
                             "come from the torch pipeline of the same source") from None

    def torch_pipeline(self, source: ParakeetSource, num_samples: int) -> dict[str, Callable]:
        """``{component: predict}`` of the torch wrappers, contract names in and out."""
        key = ("pipeline", num_samples)
        if key in source.cache:
            return source.cache[key]
        frontend = _nemo.MelFrontend(source.featurizer, num_samples).eval()
        encoder = EncoderWrapper(source.model.encoder, frontend.out_frames).eval()
        decoder = PredictionNet(source.model.decoder).eval()
        single = JointDecision(source.model.joint, source.durations).eval()

        def run(module, names_in, names_out):
            def predict(inputs):
                with torch.no_grad():
                    outs = module(*(torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in names_in))
                return {n: o.numpy().copy() for n, o in zip(names_out, outs)}
            return predict

        enc_predict = run(encoder, ["mel", "mel_length"], ["encoder", "encoder_length"])
        pre_predict = run(frontend, ["audio_signal", "audio_length"], ["mel", "mel_length"])

        def mel_encoder(inputs):
            mel = pre_predict(inputs)
            return enc_predict({"mel": mel["mel"], "mel_length": mel["mel_length"]})

        pipeline = {
            "preprocessor": pre_predict,
            "encoder": enc_predict,
            "mel_encoder": mel_encoder,
            "decoder": run(decoder, ["targets", "target_length", "h_in", "c_in"], ["decoder", "h_out", "c_out"]),
            "joint_decision_single_step": run(single, ["encoder_step", "decoder_step"], ["token_id", "token_prob", "duration"]),
        }
        source.cache[key] = pipeline
        return pipeline

    def _fit(self, audio: np.ndarray, num_samples: int) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if audio.size >= num_samples:
            return audio[:num_samples].copy()
        return np.concatenate([audio, np.zeros(num_samples - audio.size, np.float32)])

    def reference(self, source: ParakeetSource, audio: np.ndarray) -> dict:
        """The torch pipeline run on ``audio``: mel, encoder output, and the greedy decoding trace."""
        num_samples = int(audio.size)
        key = ("reference", num_samples, hashlib.sha256(np.ascontiguousarray(audio, np.float32)).hexdigest())
        if key in source.cache:
            return source.cache[key]
        pipe = self.torch_pipeline(source, num_samples)
        inputs = {"audio_signal": audio[None].astype(np.float32),
                  "audio_length": np.array([num_samples], np.int32)}
        mel = pipe["preprocessor"](inputs)
        enc = pipe["encoder"]({"mel": mel["mel"], "mel_length": mel["mel_length"]})
        trace: list = []
        decoded = self._decode(source, pipe, enc, record=trace)
        result = {"inputs": inputs, "mel": mel, "encoder": enc, "decoded": decoded, "trace": trace}
        source.cache[key] = result
        return result

    def _decode(self, source: ParakeetSource, components: Mapping[str, Callable], enc: Mapping,
                record: list | None = None) -> dict:
        h_shape, c_shape = source.h_shape, source.state_shape
        decoder, joint = components["decoder"], components["joint_decision_single_step"]

        def decode_step(target, h, c):
            out = decoder({"targets": np.array([[target]], np.int32), "target_length": np.ones(1, np.int32),
                           "h_in": np.asarray(h, np.float32).reshape(h_shape),
                           "c_in": np.asarray(c, np.float32).reshape(c_shape)})
            return (_arr(out, "decoder").astype(np.float32).reshape(1, -1, 1),
                    _arr(out, "h_out").astype(np.float32).reshape(h_shape),
                    _arr(out, "c_out").astype(np.float32).reshape(c_shape))

        def joint_step(f, g):
            out = joint({"encoder_step": f, "decoder_step": g})
            return (int(np.ravel(_arr(out, "token_id"))[0]), float(np.ravel(_arr(out, "token_prob"))[0]),
                    int(np.ravel(_arr(out, "duration"))[0]))

        encoder = _arr(enc, "encoder").astype(np.float32)[0]
        length = int(np.ravel(_arr(enc, "encoder_length"))[0])
        return tdt_greedy(encoder, length, decode_step, joint_step, blank_id=source.blank_id,
                          state_shape=c_shape, h_shape=h_shape, max_symbols=source.max_symbols,
                          record=record)

    # -- validation hooks ----------------------------------------------------------------------------

    def validation_audio(self, component: ComponentConfig, seed: int = 0) -> np.ndarray:
        from kiln.audio import speech_mix

        num_samples = int(WINDOW_SECONDS * SAMPLE_RATE)
        for spec in component.inputs:
            if spec.name == "audio_signal":
                num_samples = int(spec.shape[-1])
        return self._fit(speech_mix(num_samples / SAMPLE_RATE, rate=SAMPLE_RATE, seed=seed), num_samples)

    def stream(self, component: ComponentConfig, predict: Callable[[dict], dict],
               audio: np.ndarray) -> list[dict[str, np.ndarray]]:
        source = self._source_for(component.model)
        name = component.name
        ref = self.reference(source, self._fit(audio, audio.size))
        if name in ("preprocessor", "mel_encoder"):
            return [predict(dict(ref["inputs"]))]
        if name == "encoder":
            return [predict({"mel": ref["mel"]["mel"], "mel_length": ref["mel"]["mel_length"]})]
        if name == "decoder":
            tokens = ref["decoded"]["tokens"][:DECODER_STEPS - 1]
            targets = [source.blank_id] + tokens
            targets += [(7 * i + 3) % source.vocab_size for i in range(DECODER_STEPS - len(targets))]
            h = np.zeros(source.h_shape, np.float32)
            c = np.zeros(source.state_shape, np.float32)
            steps = []
            for target in targets:
                out = predict({"targets": np.array([[target]], np.int32), "target_length": np.ones(1, np.int32),
                               "h_in": h, "c_in": c})
                steps.append(out)
                h = _arr(out, "h_out").astype(np.float32).reshape(source.h_shape)
                c = _arr(out, "c_out").astype(np.float32).reshape(source.state_shape)
            return steps
        trace = ref["trace"]
        if name in ("joint", "joint_decision_single_step"):
            picks = trace[:JOINT_STEPS]
            return [predict({"encoder_step": s["encoder_step"], "decoder_step": s["decoder_step"]})
                    for s in picks]
        # joint_decision: the whole encoder output against the first few distinct decoder outputs
        seen, calls = set(), []
        for s in trace:
            digest = hashlib.sha256(s["decoder_step"].tobytes()).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            calls.append(predict({"encoder": ref["encoder"]["encoder"], "decoder_step": s["decoder_step"]}))
            if len(calls) == JOINT_DECISION_CALLS:
                break
        return calls

    def task_metrics(self, component: ComponentConfig, reference: list[dict], candidate: list[dict]) -> dict:
        name = component.name
        if name in ("joint_decision", "joint_decision_single_step"):
            ref_tok = np.concatenate([np.ravel(_arr(s, "token_id")) for s in reference])
            out_tok = np.concatenate([np.ravel(_arr(s, "token_id")) for s in candidate])
            ref_dur = np.concatenate([np.ravel(_arr(s, "duration")) for s in reference])
            out_dur = np.concatenate([np.ravel(_arr(s, "duration")) for s in candidate])
            return {"decisions": int(ref_tok.size),
                    "token_agreement": float(np.mean(ref_tok == out_tok)),
                    "duration_agreement": float(np.mean(ref_dur == out_dur)),
                    "blank_fraction_reference": float(np.mean(ref_tok == self._blank_of(component)))}
        if name == "joint":
            n_dur = self._n_durations(component)
            ref = np.stack([np.ravel(_arr(s, "logits")) for s in reference])
            out = np.stack([np.ravel(_arr(s, "logits")) for s in candidate]).astype(np.float32)
            return {"steps": int(ref.shape[0]),
                    "token_argmax_agreement": float(np.mean(ref[:, :-n_dur].argmax(1) == out[:, :-n_dur].argmax(1))),
                    "duration_argmax_agreement": float(np.mean(ref[:, -n_dur:].argmax(1) == out[:, -n_dur:].argmax(1)))}
        if name in ("encoder", "mel_encoder", "preprocessor"):
            output = "mel" if name == "preprocessor" else "encoder"
            ref = np.ravel(_arr(reference[0], output)).astype(np.float64)
            out = np.ravel(_arr(candidate[0], output)).astype(np.float64)
            denom = np.linalg.norm(ref) * np.linalg.norm(out)
            length = "mel_length" if name == "preprocessor" else "encoder_length"
            return {"cosine_similarity": float(ref @ out / denom) if denom else None,
                    "quality": float(1 - np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-12)),
                    "length_equal": bool(np.array_equal(np.ravel(_arr(reference[0], length)),
                                                        np.ravel(_arr(candidate[0], length))))}
        if name == "decoder":
            ref = np.stack([np.ravel(_arr(s, "decoder")) for s in reference])
            out = np.stack([np.ravel(_arr(s, "decoder")) for s in candidate]).astype(np.float32)
            return {"steps": int(ref.shape[0]), "max_abs_decoder_error": float(np.max(np.abs(ref - out)))}
        return {}

    def _blank_of(self, component: ComponentConfig) -> int:
        source = self._sources.get(component.model)
        return source.blank_id if source else -1

    def _n_durations(self, component: ComponentConfig) -> int:
        source = self._sources.get(component.model)
        return len(source.durations) if source else 5

    def plot_series(self, component: ComponentConfig, steps: list[dict]) -> tuple[str, np.ndarray] | None:
        name = component.name
        if name == "decoder":
            return "decoder output L2 norm per step", np.array([float(np.linalg.norm(_arr(s, "decoder"))) for s in steps])
        if name == "joint":
            return "max joint logit per step", np.array([float(np.max(_arr(s, "logits"))) for s in steps])
        if name == "joint_decision_single_step":
            return "token probability per step", np.array([float(np.ravel(_arr(s, "token_prob"))[0]) for s in steps])
        return None  # one call per backend: nothing to plot over time

    def end_to_end(self, model: ModelConfig, backends: Mapping[str, Mapping[str, Callable[[dict], dict]]],
                   audio: np.ndarray) -> dict | None:
        """TDT greedy decoding on the host through each backend's own components (audio ->
        mel_encoder, or preprocessor then encoder -> decoder and joint_decision_single_step, decoder
        state carried from the backend's own outputs); agreement with ``torch_cpu``."""
        source = self._source_for(model.name)
        audio_spec = None
        for cname in ("mel_encoder", "preprocessor"):
            if cname in model.components:
                audio_spec = model.components[cname].inputs[0]
                break
        num_samples = int(audio_spec.shape[-1]) if audio_spec else int(WINDOW_SECONDS * SAMPLE_RATE)
        audio = self._fit(audio, num_samples)
        inputs = {"audio_signal": audio[None], "audio_length": np.array([num_samples], np.int32)}
        results = {}
        for backend, comps in backends.items():
            missing = [c for c in ("decoder", "joint_decision_single_step") if c not in comps]
            if "mel_encoder" not in comps and not {"preprocessor", "encoder"} <= set(comps):
                missing.append("mel_encoder (or preprocessor + encoder)")
            if missing:
                results[backend] = {"skipped": f"missing components: {', '.join(missing)}"}
                continue
            if "mel_encoder" in comps:
                enc = comps["mel_encoder"](dict(inputs))
            else:
                mel = comps["preprocessor"](dict(inputs))
                enc = comps["encoder"]({"mel": np.asarray(mel["mel"], np.float32),
                                        "mel_length": np.asarray(mel["mel_length"]).astype(np.int32)})
            decoded = self._decode(source, comps, enc)
            text = None
            tokenizer = getattr(source.model, "tokenizer", None)
            if tokenizer is not None:
                try:
                    text = tokenizer.ids_to_text(decoded["tokens"])
                except Exception:  # a tokenizer quirk must not hide the token comparison
                    text = None
            results[backend] = {"tokens": decoded["tokens"], "durations": decoded["durations"],
                                "frames": decoded["frames"], "text": text,
                                "encoder_length": int(np.ravel(_arr(enc, "encoder_length"))[0])}
        reference = results.get("torch_cpu", {}).get("tokens")
        for backend, entry in results.items():
            if reference is not None and "tokens" in entry:
                entry["vs_torch_cpu"] = agreement(reference, entry["tokens"])
                entry["durations_vs_torch_cpu"] = agreement(results["torch_cpu"]["durations"], entry["durations"])
        return {"task": "TDT greedy decoding (host loop; decoder state carried per backend)",
                "synthetic": bool(model.synthetic), "blank_id": source.blank_id,
                "max_symbols_per_frame": source.max_symbols, "durations": source.durations,
                "backends": results}


FAMILY = ParakeetTDTFamily()
