"""Parakeet EOU's checkpoint part: random-initialised checkpoints (synthetic, for tests and
benchmarks) of the published architecture (``full``) and a tiny one, built offline as real ``.nemo``
files with a sentencepiece tokenizer holding ``<EOU>`` and ``<EOB>``, their decisions calibrated."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from kiln.models import _nemo, records


SAMPLE_RATE = 16_000


EOU_STRING = "<EOU>"   # NeMo's asr_eou_models / audio_to_eou_label_lhotse constants


EOB_STRING = "<EOB>"


ARCHITECTURES: dict[str, dict[str, Any]] = {
    # for tests and `make run`: seconds to build, export and stream. A short left context (16
    # frames = 1.28 s) so the attention cache fills within the validation audio and both regimes
    # (filling, full) are exercised.
    "tiny": {"n_mels": 80, "d_model": 64, "n_layers": 2, "n_heads": 4, "subsampling_factor": 8,
             "subsampling_conv_channels": 32, "ff_expansion_factor": 4, "conv_kernel_size": 9,
             "att_context_size": [16, 1], "vocab_size": 40, "pred_hidden": 64, "pred_rnn_layers": 1,
             "joint_hidden": 64, "max_symbols": 5, "xscaling": True, "conv_norm_type": "layer_norm"},
    # the published parakeet_realtime_eou_120m-v1 geometry, for the benchmark: 17 layers of 512, left
    # context 70 (cache_last_channel [17,1,70,512]), causal conv kernel 9 (cache_last_time
    # [17,1,512,8]), 1024 BPE pieces + <EOU> + <EOB> (blank 1026), from the public record
    # (records/parakeet_realtime_eou_120m_v1.yaml); the keys no record shows are assumed there
    "full": records.standin("parakeet_realtime_eou_120m_v1", {
        "n_heads": 8, "ff_expansion_factor": 4, "subsampling_conv_channels": 256, "joint_hidden": 640,
        "xscaling": True, "conv_norm_type": "layer_norm", "max_symbols": 5}),
}


TOKENIZER_TEXT = (
    "The quick brown fox jumps over the lazy dog.",
    "Voice activity detection finds the parts of a recording that contain speech.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Core ML models run on the neural engine of iPhone and Mac.",
    "Turn detection tells a voice agent when the user has finished speaking.",
)


def build_eou_tokenizer(out_dir: Path, vocab_size: int) -> Path:
    """A BPE SentencePiece vocabulary of ``vocab_size`` pieces whose last two are ``<EOU>`` and
    ``<EOB>`` (user-defined pieces), the layout of the published model (EOU 1024, EOB 1025)."""
    from sentencepiece import sentencepiece_model_pb2 as sp_pb

    out_dir = _nemo.build_sentencepiece(out_dir, vocab_size - 2, TOKENIZER_TEXT)
    proto = sp_pb.ModelProto()
    proto.ParseFromString((out_dir / "tokenizer.model").read_bytes())
    for piece in (EOU_STRING, EOB_STRING):
        proto.pieces.add(piece=piece, score=0.0, type=sp_pb.ModelProto.SentencePiece.USER_DEFINED)
    (out_dir / "tokenizer.model").write_bytes(proto.SerializeToString())
    (out_dir / "tokenizer.vocab").write_text("".join(f"{p.piece}\t{p.score:g}\n" for p in proto.pieces))
    (out_dir / "vocab.txt").write_text("".join(f"{p.piece}\n" for p in proto.pieces))
    return out_dir


def nemo_config(arch: Mapping[str, Any], tokenizer_dir: Path) -> dict:
    """A cache-aware ``EncDecRNNTBPEModel`` config: causal downsampling, chunked limited attention,
    causal convolutions, un-normalised log-mel features, RNNT greedy decoding."""
    return {
        "sample_rate": SAMPLE_RATE,
        "tokenizer": {"dir": str(tokenizer_dir), "type": "bpe"},
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": SAMPLE_RATE, "normalize": "NA", "window_size": 0.025, "window_stride": 0.01,
            "window": "hann", "features": arch["n_mels"], "n_fft": 512, "log": True, "frame_splicing": 1,
            "dither": 1.0e-5, "pad_to": 0, "pad_value": 0.0,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder",
            "feat_in": arch["n_mels"], "feat_out": -1, "n_layers": arch["n_layers"], "d_model": arch["d_model"],
            "subsampling": "dw_striding", "subsampling_factor": arch["subsampling_factor"],
            "subsampling_conv_channels": arch["subsampling_conv_channels"], "causal_downsampling": True,
            "ff_expansion_factor": arch["ff_expansion_factor"], "self_attention_model": "rel_pos",
            "n_heads": arch["n_heads"], "att_context_size": list(arch["att_context_size"]),
            "att_context_style": "chunked_limited", "xscaling": arch["xscaling"], "untie_biases": True,
            "pos_emb_max_len": 5000, "conv_kernel_size": arch["conv_kernel_size"],
            "conv_norm_type": arch["conv_norm_type"], "conv_context_size": "causal", "dropout": 0.1,
            "dropout_pre_encoder": 0.1, "dropout_emb": 0.0, "dropout_att": 0.1,
        },
        **_nemo.transducer_heads(arch),
        "decoding": {"strategy": "greedy", "greedy": {"max_symbols": arch["max_symbols"]}},
        "loss": {"loss_name": "default"},
        "model_defaults": {"enc_hidden": arch["d_model"], "pred_hidden": arch["pred_hidden"],
                           "joint_hidden": arch["joint_hidden"]},
        "optim": None,
        "kiln": {"synthetic": True, "note": "random-initialised by kiln; not a trained model"},
    }


def build_random(architecture: str, *, seed: int, overrides: Mapping[str, Any], out_dir: Path,
                 config_edit: Callable[[dict], None] | None = None) -> Path:
    """Write a random-initialised cache-aware RNNT ``.nemo`` of ``architecture`` (synthetic).

    ``config_edit`` changes the NeMo config before the model is built (tests use it to make
    checkpoints that are *not* streaming models)."""
    arch = _nemo.resolve_architecture("parakeet_eou", ARCHITECTURES, architecture, overrides)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok_dir = build_eou_tokenizer(out_dir / f"tokenizer_eou_{architecture}", int(arch["vocab_size"]))
    config = nemo_config(arch, tok_dir)
    if config_edit is not None:
        config_edit(config)
    from omegaconf import OmegaConf

    with _nemo.quiet_nemo():
        from nemo.collections.asr.models import EncDecRNNTBPEModel

        torch.manual_seed(int(seed))
        model = EncDecRNNTBPEModel(cfg=OmegaConf.create(config))
        model.eval()
        if config_edit is None:
            calibrate_decisions(model, seed=int(seed))
        return _nemo.save_reproducibly(model, out_dir / f"parakeet_eou_{architecture}_seed{seed}.nemo")


#: share of calibration frames where a random model's greedy step picks blank / <EOU>
CALIBRATION_BLANK_SHARE = 0.85


CALIBRATION_EOU_SHARE = 0.01


def calibrate_decisions(model, seed: int) -> None:
    """Shift a random model's joint output biases so its decisions look like a transducer's:
    blank on ~85% of frames, ``<EOU>`` the pick on a few percent (random weights otherwise emit a
    token on every frame and almost never the EOU token, leaving nothing to compare).

    Calibrated on noise bursts and pauses (no speech needed at build time), at the decoder's start
    state: the blank margin is the 85th percentile of ``max(other) - blank``, the EOU margin the 1st
    percentile of ``max(other) - eou`` after that. Only the two biases change."""
    rng = np.random.default_rng(seed)
    rate = int(model.cfg.sample_rate)
    envelope = np.repeat(rng.random(16) < 0.5, rate // 2).astype(np.float32)
    audio = (0.1 * rng.standard_normal(envelope.size) * (0.05 + envelope)).astype(np.float32)
    eou = token_id(model.tokenizer, EOU_STRING)
    blank = int(model.decoder.blank_idx)
    with torch.no_grad(), _nemo.typecheck_disabled():
        x = torch.from_numpy(audio)[None]
        mel, mel_len = model.preprocessor(input_signal=x, length=torch.tensor([x.shape[1]]))
        encoded, _ = model.encoder(audio_signal=mel, length=mel_len)
        start = torch.full((1, 1), blank, dtype=torch.long)
        g, _ = model.decoder.predict(start, None, add_sos=False, batch_size=1)       # [1, 1, H]
        logits = model.joint.joint_net(model.joint.enc(encoded.transpose(1, 2)) + model.joint.pred(g))[0]
        bias = model.joint.joint_net[-1].bias

        def margin(index: int, share: float) -> float:
            others = logits.clone()
            others[:, index] = -float("inf")
            gap = others.max(dim=-1).values - logits[:, index]
            return float(torch.quantile(gap, share)) + 1e-3

        bias[blank] += margin(blank, CALIBRATION_BLANK_SHARE)
        logits = model.joint.joint_net(model.joint.enc(encoded.transpose(1, 2)) + model.joint.pred(g))[0]
        if eou is not None:
            bias[eou] += margin(eou, CALIBRATION_EOU_SHARE)


def token_id(tokenizer, token: str) -> int | None:
    """The id of ``token``, or None when the vocabulary has no such piece (SentencePiece maps an
    unknown piece to ``<unk>``, so the id is checked by mapping it back)."""
    try:
        tid = int(tokenizer.token_to_id(token))
    except Exception:  # tokenizers raise KeyError/ValueError/IndexError for unknown tokens
        return None
    try:
        back = tokenizer.ids_to_tokens([tid])
    except Exception:
        return None
    return tid if back and back[0] == token else None
