"""Random-initialised Parakeet TDT checkpoints (synthetic, for tests and benchmarks): the published
v3 architecture (``full``) and a tiny one, built offline as real ``.nemo`` files with a sentencepiece
tokenizer trained on a few sentences."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from kiln.models import _nemo, records

SAMPLE_RATE = 16_000

# -- architectures of random-initialised models -----------------------------------------------------

ARCHITECTURES: dict[str, dict[str, Any]] = {
    # for tests: seconds to build, export and run
    "tiny": {"n_mels": 80, "d_model": 64, "n_layers": 2, "n_heads": 4, "subsampling_factor": 8,
             "subsampling_conv_channels": 32, "ff_expansion_factor": 4, "conv_kernel_size": 9,
             "vocab_size": 48, "pred_hidden": 64, "pred_rnn_layers": 2, "joint_hidden": 64,
             "durations": [0, 1, 2, 3, 4], "use_bias": True, "xscaling": True, "max_symbols": 10},
    # the published v3 architecture (0.6B parameters), for the benchmark: every key but max_symbols
    # from the public record of the real checkpoint (records/parakeet_tdt_0.6b_v3.yaml)
    "full": records.standin("parakeet_tdt_0.6b_v3", {"max_symbols": 10}),
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
    heads = _nemo.transducer_heads(arch)
    heads["joint"]["num_extra_outputs"] = len(durations)   # TDT: duration logits after the tokens
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
        **heads,
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




def build_random(architecture: str, *, seed: int, overrides: Mapping[str, Any], out_dir: Path) -> Path:
    """Write ``parakeet_tdt_<architecture>_seed<seed>.nemo``: a random-initialised TDT model."""
    arch = _nemo.resolve_architecture("parakeet_tdt", ARCHITECTURES, architecture, overrides)
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
        return _nemo.save_reproducibly(model, out_dir / f"parakeet_tdt_{architecture}_seed{seed}.nemo")
