"""Kokoro's checkpoint part: the architectures (``tiny``, and ``full`` as the published config records it) and :func:`build_random`, a random-initialised bundle (config, weights, a synthetic voice pack) in one file; :func:`build_kmodel` builds kokoro's ``KModel`` for a config, random or with weights (``load`` uses it too)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from kiln.foundation.errors import ModelError, SourceError
from kiln.models import records


#: id 0 ("$") is the boundary/pad token (Kokoro's config.json vocabulary starts at 1)
PAD = "$"


#: the tiny model's small vocabulary: what espeak-ng / misaki produce for English
TINY_SYMBOLS = PAD + ";:,.!?— " + "AIOQWY" + "abdefhijklmnpstuvwz" + "ɑɐæðʤəɚɛɜɪŋɔɹɾʃʊʌʒθʧɡʔᵊˈˌː"


ARCHITECTURES: dict[str, dict[str, Any]] = {
    # seconds to build and export; same layer types, one of each where kokoro has several.
    # style_dim stays 128: KModel.forward_with_tokens slices ref_s at 128
    "tiny": {
        "symbols": TINY_SYMBOLS, "hidden_dim": 32, "style_dim": 128, "n_layer": 1, "max_dur": 8,
        "dropout": 0.2, "text_encoder_kernel_size": 5, "n_mels": 80,
        "plbert": {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64,
                   "max_position_embeddings": 256, "num_hidden_layers": 1, "dropout": 0.1},
        "istftnet": {"upsample_kernel_sizes": [20, 12], "upsample_rates": [10, 6],
                     "gen_istft_hop_size": 5, "gen_istft_n_fft": 20,
                     "resblock_dilation_sizes": [[1, 3, 5]], "resblock_kernel_sizes": [3],
                     "upsample_initial_channel": 16},
        # kokoro's Decoder hard-codes widths 1024 / 512 (= upsample_initial_channel) / 64
        "kiln_decoder": {"width": 32, "asr_res": 8},
    },
    # the published Kokoro-82M configuration (81.8M parameters): its config.json as public material
    # records it (records/kokoro_82m.yaml), vocabulary included, key for key
    "full": records.standin("kokoro_82m", {}),
}


#: voice-pack rows: kokoro packs hold one style vector per phoneme count (1..510)
VOICE_ROWS = 510


BUNDLE_FORMAT = "kiln-kokoro-random/1"


MODEL_KEYS = ("bert", "bert_encoder", "predictor", "text_encoder", "decoder")


def kmodel_config(arch: Mapping[str, Any]) -> dict:
    """A kokoro ``config.json`` dict for ``arch``: the architecture itself when it carries its
    ``vocab`` (the recorded real config), else with the vocabulary of its symbol table."""
    if "symbols" not in arch:
        return copy.deepcopy(dict(arch))
    symbols = arch["symbols"]
    cfg = {k: v for k, v in arch.items() if k != "symbols"}
    cfg["vocab"] = {s: i for i, s in enumerate(symbols) if s != PAD}
    cfg["n_token"] = len(symbols)
    return cfg


def _narrow_decoder(width: int, asr_res: int):
    """kokoro's ``Decoder`` with its hard-coded widths as arguments (the tiny architecture); the
    forward is kokoro's own."""
    from kokoro.istftnet import AdainResBlk1d, Decoder, Generator
    from torch.nn.utils import weight_norm

    class NarrowDecoder(Decoder):
        def __init__(self, dim_in, style_dim, dim_out, resblock_kernel_sizes, upsample_rates,
                     upsample_initial_channel, resblock_dilation_sizes, upsample_kernel_sizes,
                     gen_istft_n_fft, gen_istft_hop_size, disable_complex=False):
            nn.Module.__init__(self)
            extra = 2 + asr_res
            self.encode = AdainResBlk1d(dim_in + 2, width, style_dim)
            self.decode = nn.ModuleList([AdainResBlk1d(width + extra, width, style_dim) for _ in range(3)])
            self.decode.append(AdainResBlk1d(width + extra, upsample_initial_channel, style_dim, upsample=True))
            self.F0_conv = weight_norm(nn.Conv1d(1, 1, kernel_size=3, stride=2, groups=1, padding=1))
            self.N_conv = weight_norm(nn.Conv1d(1, 1, kernel_size=3, stride=2, groups=1, padding=1))
            self.asr_res = nn.Sequential(weight_norm(nn.Conv1d(dim_in, asr_res, kernel_size=1)))
            self.generator = Generator(style_dim, resblock_kernel_sizes, upsample_rates,
                                       upsample_initial_channel, resblock_dilation_sizes,
                                       upsample_kernel_sizes, gen_istft_n_fft, gen_istft_hop_size,
                                       disable_complex=disable_complex)

    return NarrowDecoder


@contextlib.contextmanager
def _quiet() -> Any:
    """kokoro logs through loguru and torch warns about the deprecated weight_norm."""
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def build_kmodel(config: Mapping[str, Any], state: Mapping[str, Any] | None = None) -> nn.Module:
    """``kokoro.model.KModel`` for ``config`` with ``state`` (``{part: state_dict}``, kokoro's
    ``.pth`` layout) loaded; random-initialised when ``state`` is None. Offline."""
    import kokoro.model as kmodel_module
    from unittest import mock

    config = dict(config)
    narrow = config.pop("kiln_decoder", None)
    patch = mock.patch.object(kmodel_module, "Decoder", _narrow_decoder(**narrow)) if narrow \
        else contextlib.nullcontext()
    with tempfile.TemporaryDirectory() as tmp, _quiet(), patch:
        empty = Path(tmp) / "empty.pth"
        torch.save({}, empty)
        model = kmodel_module.KModel(repo_id="hexgrad/Kokoro-82M", config=config, model=str(empty))
    if state is not None:
        for key in MODEL_KEYS:
            if key not in state:
                raise SourceError(f"kokoro checkpoint has no '{key}' weights (has {sorted(state)})")
            part = state[key]
            if all(k.startswith("module.") for k in part):  # kokoro strips DataParallel's prefix too
                part = {k[len("module."):]: v for k, v in part.items()}
            try:
                getattr(model, key).load_state_dict(part)
            except RuntimeError as exc:
                raise SourceError(f"kokoro checkpoint '{key}' does not fit config: "
                                  f"{str(exc).splitlines()[0]}") from exc
    model.eval().requires_grad_(False)
    # weight_norm's hook stored ``weight`` computed with grad enabled (a non-leaf tensor, which
    # deepcopy refuses); recompute it as a leaf
    with torch.no_grad():
        for module in model.modules():
            for hook in module._forward_pre_hooks.values():
                if type(hook).__name__ == "WeightNorm":
                    setattr(module, hook.name, hook.compute_weight(module))
    return model


def build_random(architecture: str, *, seed: int, overrides: Mapping[str, Any], out_dir: Path) -> Path:
    """A random-initialised Kokoro bundle (config, weights, a synthetic voice pack) in one file."""
    if architecture not in ARCHITECTURES:
        raise ModelError(f"kokoro: unknown architecture '{architecture}' (known: {', '.join(ARCHITECTURES)})")
    arch = dict(ARCHITECTURES[architecture])
    unknown = sorted(set(overrides) - set(arch))
    if unknown:
        raise ModelError(f"kokoro: unknown architecture override(s) {unknown} (allowed: {', '.join(sorted(arch))})")
    arch.update(overrides)
    config = kmodel_config(arch)
    torch.manual_seed(int(seed))
    model = build_kmodel(config)
    generator = torch.Generator().manual_seed(int(seed) + 1)
    voice = 0.3 * torch.randn(VOICE_ROWS, 1, 2 * int(config["style_dim"]), generator=generator)
    bundle = {"format": BUNDLE_FORMAT, "config": json.dumps(config, ensure_ascii=False, sort_keys=True),
              "model": {k: getattr(model, k).state_dict() for k in MODEL_KEYS},
              "voices": {"synthetic": voice}}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"kokoro_{architecture}_seed{seed}.pt"
    tmp = out.with_suffix(".tmp")
    torch.save(bundle, tmp)
    tmp.replace(out)
    return out
