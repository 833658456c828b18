"""Kokoro-82M text-to-speech (StyleTTS2 text/prosody model + iSTFTNet vocoder), 24 kHz.

Source: ``hexgrad/Kokoro-82M`` (``config.json``, ``kokoro-v1_0.pth``, a voice pack) or a
random-initialised bundle (:func:`build_random`: ``tiny`` and ``full`` architectures, synthetic);
the network is the ``kokoro`` package's ``KModel``. Components ``kokoro_5s`` and ``kokoro_15s``
(the consuming runtime's names) are one fixed-shape network each (:class:`FixedKokoro` in
``_kokoro_net``): a token buffer of the contract's length with a padding mask in, a fixed window of
24 kHz audio out, the vocoder's randomness as inputs, durations clamped to the window with a flag.

Contract (every length read from the component's config and checked against the checkpoint):

- inputs ``input_ids [1, T]`` int32 (config vocabulary ids, boundary token 0 first and after the
  last phoneme), ``attention_mask [1, T]`` int32 (1 on the valid prefix), ``ref_s [1, 2*style]``
  (a voice-pack row), ``random_phases [1, H]``, ``source_noise [1, samples, H]`` (H harmonics of
  the harmonic source), optional ``speed [1]``;
- outputs ``audio [1, samples]``, ``pred_dur [1, T]`` int32, ``audio_length [1]`` int32 (valid
  samples), ``clamped [1]`` int32 (1 when the predicted durations did not fit the window).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import tempfile
import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from kiln.config import ComponentConfig
from kiln.errors import ContractError, ModelError, SourceError
from kiln.models import records
from kiln.models._kokoro_net import SAMPLE_RATE, FixedKokoro, FixedKokoroComponent
from kiln.family.spec import ComponentSpec, Context, FamilySpec, Feeds, Metric, PlotSeries, require_fact
from kiln.sources import SourceRecord

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

VALIDATION_TEXT = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella.",
    "Core ML models run on the neural engine of iPhone and Mac, and kiln checks that they compute "
    "what the source computes, sentence after sentence, for as long as this one goes on and on.",
)


# -- checkpoint config and building the KModel ----------------------------------------------------

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


@dataclass
class KokoroSource:
    """What ``load`` restores: the kokoro model, its config and the voice packs."""
    model: nn.Module
    config: dict
    voices: dict[str, torch.Tensor]
    synthetic: bool


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


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle/zip errors of many types
        raise SourceError(f"{path}: not a loadable torch file: {str(exc).splitlines()[0]}") from exc


def load(record: SourceRecord) -> KokoroSource:
    """Restore the model: a random bundle (one file), or config + weights + voice pack files."""
    checkpoint = record.file("checkpoint")
    data = _torch_load(checkpoint)
    if isinstance(data, dict) and data.get("format") == BUNDLE_FORMAT:
        config, state, voices = json.loads(data["config"]), data["model"], dict(data["voices"])
    else:
        try:
            config = json.loads(record.file("config").read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise SourceError(f"{record.file('config')}: not valid JSON: {exc}") from exc
        state = data
        voice_path = record.file("voice")
        voices = {voice_path.stem: _torch_load(voice_path)}
    for name, pack in voices.items():
        if not isinstance(pack, torch.Tensor) or pack.dim() != 3 or pack.shape[-1] != 2 * config["style_dim"]:
            raise SourceError(f"{checkpoint}: voice pack '{name}' must be [rows, 1, {2 * config['style_dim']}], "
                              f"got {getattr(pack, 'shape', type(pack).__name__)}")
    model = build_kmodel(config, state)
    return KokoroSource(model=model, config=config, voices=voices, synthetic=record.synthetic)


def _required(config: Mapping[str, Any], *path: str) -> Any:
    node: Any = config
    for i, key in enumerate(path):
        if not isinstance(node, Mapping) or key not in node:
            raise ModelError(f"kokoro config has no '{'.'.join(path[:i + 1])}'")
        node = node[key]
    return node


def _encode_rows(pack: torch.Tensor) -> dict:
    rows = pack.detach().to(torch.float32).reshape(pack.shape[0], -1).contiguous().numpy()
    return {"shape": list(rows.shape), "float32_base64": base64.b64encode(rows.tobytes()).decode("ascii")}


def voice_rows(facts_: Mapping[str, Any]) -> np.ndarray:
    """The voice pack stored in the facts, ``[rows, 2*style]`` float32."""
    pack = require_fact(facts_, "voice_pack", "kokoro")
    return np.frombuffer(base64.b64decode(pack["float32_base64"]), dtype=np.float32).reshape(pack["shape"])


def facts(source: KokoroSource) -> dict:
    """JSON-able facts later jobs need, all read from the checkpoint config (and its voice pack,
    whose rows are the ``ref_s`` of the validation inputs)."""
    cfg = source.config
    ist = _required(cfg, "istftnet")
    rates = [int(r) for r in _required(ist, "upsample_rates")]
    hop = int(_required(ist, "gen_istft_hop_size"))
    gen = source.model.decoder.generator
    vocab = dict(_required(cfg, "vocab"))
    voice = sorted(source.voices)[0]
    out = {
        # kokoro's Generator builds its harmonic source at this rate (a literal in istftnet.py)
        "sample_rate": int(gen.m_source.l_sin_gen.sampling_rate),
        "vocab": vocab,
        "n_token": int(_required(cfg, "n_token")),
        "style_dim": int(_required(cfg, "style_dim")),
        "ref_s_dim": 2 * int(_required(cfg, "style_dim")),
        "context_length": int(_required(cfg, "plbert", "max_position_embeddings")),
        "max_dur": int(_required(cfg, "max_dur")),
        "n_fft": int(_required(ist, "gen_istft_n_fft")),
        "hop": hop,
        "upsample_rates": rates,
        # F0 at 2x the duration-frame rate (one upsampling block), then x prod(rates) * hop
        "frame_samples": 2 * int(np.prod(rates)) * hop,
        "harmonics": int(gen.m_source.l_sin_gen.dim),
        "synthetic": bool(source.synthetic),
        "voice": voice,
        "voice_pack": _encode_rows(source.voices[voice]),
    }
    out["validation_phonemes"] = validation_phonemes(out)
    return out


# -- tokens ---------------------------------------------------------------------------------------------

def phonemes_to_ids(phonemes: str, vocab: Mapping[str, int], max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids [1, T], attention_mask [1, T])`` int32: ``0, ids..., 0`` then padding, as
    ``KModel.forward`` builds it. An unknown phoneme or a sequence longer than the buffer is a
    :class:`ContractError` naming it (kokoro itself drops unknown symbols silently)."""
    unknown = sorted({p for p in phonemes if p not in vocab})
    if unknown:
        raise ContractError(f"kokoro: phoneme(s) {unknown} not in the model's vocabulary")
    ids = [0, *(int(vocab[p]) for p in phonemes), 0]
    if len(ids) > max_tokens:
        raise ContractError(f"kokoro: {len(phonemes)} phonemes + 2 boundary tokens = {len(ids)} tokens, "
                            f"input_ids holds {max_tokens}")
    input_ids = np.zeros((1, max_tokens), dtype=np.int32)
    mask = np.zeros((1, max_tokens), dtype=np.int32)
    input_ids[0, :len(ids)] = ids
    mask[0, :len(ids)] = 1
    return input_ids, mask


def text_to_phonemes(text: str, language: str = "en-us") -> str:
    """Offline grapheme-to-phoneme with espeak-ng through misaki's ``EspeakG2P``."""
    from misaki.espeak import EspeakG2P

    phonemes, _ = EspeakG2P(language=language)(text)
    return phonemes


def validation_phonemes(facts_: Mapping[str, Any]) -> list[str]:
    """Phoneme strings of :data:`VALIDATION_TEXT` (espeak-ng), restricted to the vocabulary (the
    tiny model's small vocabulary lacks a few symbols)."""
    vocab = facts_["vocab"]
    return ["".join(p for p in text_to_phonemes(text) if p in vocab) for text in VALIDATION_TEXT]


def _shape(component: ComponentConfig, name: str, kind: str = "inputs") -> tuple[int, ...]:
    for spec in getattr(component, kind):
        if spec.name == name:
            return tuple(spec.shape)
    raise ContractError(f"{component.model}/{component.name}: the contract has no {kind[:-1]} '{name}'")


def contract_lengths(component: ComponentConfig) -> tuple[int, int, int]:
    """``(max_tokens, samples, harmonics)`` from the component's contract."""
    max_tokens = _shape(component, "input_ids")[-1]
    samples = _shape(component, "audio", "outputs")[-1]
    noise = _shape(component, "source_noise")
    if noise[1] != samples:
        raise ContractError(f"{component.model}/{component.name}: source_noise {list(noise)} must have "
                            f"{samples} samples (the audio window)")
    return max_tokens, samples, noise[-1]


def check_contract(component: ComponentConfig, facts_: Mapping[str, Any]) -> tuple[int, int]:
    """``(max_tokens, samples)`` after checking the contract against the checkpoint's facts."""
    max_tokens, samples, harmonics = contract_lengths(component)
    where = f"{component.model}/{component.name}"
    if harmonics != facts_["harmonics"]:
        raise ContractError(f"{where}: {harmonics} harmonics in the contract, the checkpoint's harmonic "
                            f"source has {facts_['harmonics']}")
    ref = _shape(component, "ref_s")
    if ref != (1, facts_["ref_s_dim"]):
        raise ContractError(f"{where}: ref_s {list(ref)}, the checkpoint's style vectors are "
                            f"[1, {facts_['ref_s_dim']}]")
    if samples % facts_["frame_samples"]:
        raise ContractError(f"{where}: audio of {samples} samples is not a whole number of "
                            f"{facts_['frame_samples']}-sample duration frames")
    return max_tokens, samples


def make_feed(facts_: Mapping[str, Any], component: ComponentConfig, phonemes: str,
              voice: Any = None, seed: int = 0, speed: float = 1.0) -> dict[str, np.ndarray]:
    """One input: tokens of ``phonemes``, the voice-pack row for its length (what KPipeline picks;
    ``voice`` defaults to the facts' pack), and the vocoder's randomness drawn on the host from
    ``seed`` (``random_phases`` uniform in [0, 1), ``source_noise`` standard normal, as kokoro draws)."""
    max_tokens, samples, harmonics = contract_lengths(component)
    check_contract(component, facts_)
    ids, mask = phonemes_to_ids(phonemes, facts_["vocab"], max_tokens)
    rows = voice_rows(facts_) if voice is None else np.asarray(voice, dtype=np.float32).reshape(len(voice), -1)
    rng = np.random.default_rng(seed)
    feed = {
        "input_ids": ids, "attention_mask": mask,
        "ref_s": rows[min(max(len(phonemes), 1), rows.shape[0]) - 1].reshape(1, -1).astype(np.float32),
        "random_phases": rng.random((1, harmonics), dtype=np.float32),
        "source_noise": rng.standard_normal((1, samples, harmonics), dtype=np.float32),
    }
    if any(s.name == "speed" for s in component.inputs):
        feed["speed"] = np.array([speed], dtype=np.float32)
    return feed


# -- the component ----------------------------------------------------------------------------------

def wrapper(source: KokoroSource, component: ComponentConfig, facts_: Mapping[str, Any]) -> nn.Module:
    max_tokens, samples = check_contract(component, facts_)
    net = FixedKokoro(source.model, max_tokens, samples)
    return FixedKokoroComponent(net, [s.name for s in component.inputs])


def example(component: ComponentConfig, facts_: Mapping[str, Any], rng: np.random.Generator) -> dict:
    """Tracing inputs: a third of the buffer valid (the padding path must be the traced one: with no
    padding, transformers skips building ALBERT's attention mask)."""
    symbols = sorted(facts_["vocab"])
    count = max(1, contract_lengths(component)[0] // 3)
    phonemes = "".join(symbols[int(i)] for i in rng.integers(0, len(symbols), size=count))
    return make_feed(facts_, component, phonemes, seed=int(rng.integers(0, 2**31)))


def sentence_steps(facts_: Mapping[str, Any], component: ComponentConfig) -> list[dict]:
    """One input per validation sentence, its phonemes cut to the token buffer."""
    max_tokens = contract_lengths(component)[0]
    phonemes = [p[:max_tokens - 2] for p in require_fact(facts_, "validation_phonemes", "kokoro")]
    return [make_feed(facts_, component, p, seed=i) for i, p in enumerate(phonemes)]


def sentence_feeds(ctx: Context, component: ComponentConfig) -> Feeds:
    """The validation sentences (espeak-ng phonemes), each cut to the token buffer; the longest
    overflows the 5 s window and must come back flagged ``clamped``."""
    steps = sentence_steps(ctx.facts, component)
    return Feeds(steps, f"{len(steps)} espeak-ng sentences as phoneme ids (voice "
                        f"'{ctx.facts['voice']}'), vocoder noise drawn from seeds 0..{len(steps) - 1}")


# -- metrics and artifacts ------------------------------------------------------------------------------

def _valid_audio(step: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    return np.ravel(step["audio"])[:n]


def waveform_metrics(reference: list[dict], candidate: list[dict], facts_: Mapping[str, Any]) -> dict:
    """Per validation input: ``pred_dur`` equality, waveform correlation, log-mel distance, max
    abs error over the reference's valid samples, and whether the clamp flags agree."""
    from kiln.validate.audio import log_mel_distance, waveform_correlation

    rate = int(facts_["sample_rate"])
    cases = []
    for ref, got in zip(reference, candidate):
        n = int(np.ravel(ref["audio_length"])[0])
        a, b = _valid_audio(ref, n), _valid_audio(got, n)
        cases.append({
            "valid_samples": n,
            "valid_samples_equal": n == int(np.ravel(got["audio_length"])[0]),
            "pred_dur_equal": bool(np.array_equal(np.ravel(ref["pred_dur"]), np.ravel(got["pred_dur"]))),
            "pred_dur_agreement": float(np.mean(np.ravel(ref["pred_dur"]) == np.ravel(got["pred_dur"]))),
            "clamped": int(np.ravel(ref["clamped"])[0]),
            "clamped_equal": bool(np.array_equal(np.ravel(ref["clamped"]), np.ravel(got["clamped"]))),
            "correlation": waveform_correlation(a, b),
            "log_mel_distance_db": log_mel_distance(a, b, rate),
            "max_abs_error": float(np.max(np.abs(a - b))) if n else 0.0,
        })
    return {
        "cases": cases,
        "pred_dur_equal": all(c["pred_dur_equal"] for c in cases),
        "clamped_equal": all(c["clamped_equal"] for c in cases),
        "min_correlation": min(c["correlation"] for c in cases),
        "max_log_mel_distance_db": max(c["log_mel_distance_db"] for c in cases),
        "max_abs_error": max(c["max_abs_error"] for c in cases),
    }


def audio_rms(steps: list[dict]) -> np.ndarray:
    """RMS of each input's valid audio (one value per validation input)."""
    out = []
    for step in steps:
        a = _valid_audio(step, int(np.ravel(step["audio_length"])[0])).astype(np.float64)
        out.append(float(np.sqrt(np.mean(a * a))) if a.size else 0.0)
    return np.array(out)


def write_audio_artifacts(out_dir: str | Path, label: str, facts_: Mapping[str, Any],
                          reference: list[dict], candidates: Mapping[str, list[dict]]) -> list[Path]:
    """Per validation input: every backend's valid audio as WAV and one waveform + spectrogram
    plot of all of them (``<label>_case<i>_<backend>.wav``, ``<label>_case<i>.png``)."""
    from kiln.validate.audio import waveform_plot, write_wav

    rate = int(facts_["sample_rate"])
    out_dir = Path(out_dir)
    written = []
    for i, ref in enumerate(reference):
        n = int(np.ravel(ref["audio_length"])[0])
        waves = {"torch": _valid_audio(ref, n)}
        waves.update({name: _valid_audio(steps[i], n) for name, steps in candidates.items()})
        for name, wave in waves.items():
            written.append(write_wav(out_dir / f"{label}_case{i}_{name}.wav", wave, rate))
        title = f"{label} case {i}" + (" [synthetic weights]" if facts_.get("synthetic") else "")
        written.append(waveform_plot(out_dir / f"{label}_case{i}.png", title, rate, waves))
    return written


#: seed of kokoro's random draws in the faithfulness check
FAITHFULNESS_SEED = 0


def faithfulness(source: KokoroSource, predictors: Mapping[str, Any], facts_: Mapping[str, Any],
                 components: Mapping[str, Any] | None = None) -> dict:
    """Every traced program (as the later jobs run it) against kokoro's own
    ``KModel.forward_with_tokens`` on identical inputs: the unpadded ids of the shortest validation
    sentence, the same style row, and kokoro's random draws recorded and passed in as
    ``random_phases`` / ``source_noise`` (zero-padded to the component's window). The program sees
    the ids in its fixed token buffer with padding and a window longer than the sentence, so the
    masks are exercised. Per component: pred_dur equality, waveform correlation, log-mel distance,
    max abs error over kokoro's samples."""
    from kiln.export import rewrites as rw

    if components is None:
        raise ModelError("kokoro: faithfulness needs the model's component contracts")
    text = min(require_fact(facts_, "validation_phonemes", "kokoro"), key=len)
    ids, _ = phonemes_to_ids(text, facts_["vocab"], len(text) + 2)
    length = len(text) + 2
    ref_s = torch.from_numpy(voice_rows(facts_)[len(text) - 1].reshape(1, -1).copy())
    # kokoro's draws from a fixed seed: the record is the same in every build (verify compares it).
    # The vocoder reads the angle of its harmonic source's STFT, which jumps by 2*pi where the
    # spectrum crosses the negative real axis, so rounding-level differences between torch.stft and
    # the program's conv STFT can move a few bins across it: measured over 8 noise draws of the tiny
    # model, max abs error 1e-5 to 0.22 and correlation >= 0.99987; a one-sample misalignment of the
    # noise gives 0.15.
    with torch.random.fork_rng(), rw.record_random() as draws, torch.no_grad():
        torch.manual_seed(FAITHFULNESS_SEED)
        audio, dur = source.model.forward_with_tokens(torch.from_numpy(ids).long(), ref_s, 1)
    n = audio.numel()
    ref = {"audio": audio.numpy()[None], "audio_length": np.array([n]), "clamped": np.array([0]),
           "pred_dur": dur.numpy().astype(np.int32)}
    report = {}
    for name in sorted(predictors):
        component = components[name]
        max_tokens, samples, _ = contract_lengths(component)
        if n > samples or length > max_tokens:
            raise ModelError(f"kokoro: the faithfulness sentence ({length} tokens, {n} samples) does not fit "
                             f"{name} ({max_tokens} tokens, {samples} samples)")
        feed = make_feed(facts_, component, text)
        np.testing.assert_array_equal(feed["ref_s"], ref_s.numpy())   # make_feed picks the same row
        feed["random_phases"] = draws[0].values.numpy().astype(np.float32)
        noise = np.zeros_like(feed["source_noise"])
        noise[:, :n] = draws[1].values.numpy()
        feed["source_noise"] = noise
        out = predictors[name](feed)
        got = {"audio": out["audio"], "audio_length": out["audio_length"], "clamped": out["clamped"],
               "pred_dur": np.asarray(out["pred_dur"])[:, :length]}
        case = waveform_metrics([ref], [got], facts_)["cases"][0]
        report[name] = {"phonemes": text, "tokens": max_tokens, "samples": samples, **case}
    return {"traced_program_vs_kokoro_forward": report}


def kokoro_component(name: str) -> ComponentSpec:
    return ComponentSpec(
        name,
        inputs=("input_ids", "attention_mask", "ref_s", "random_phases", "source_noise", "speed"),
        outputs=("audio", "pred_dur", "audio_length", "clamped"),
        wrapper=wrapper, feeds=sentence_feeds, example=example,
        metrics=(Metric("waveform", waveform_metrics),),
        plot=PlotSeries("RMS of the valid audio per sentence", audio_rms), artifacts=write_audio_artifacts,
        description="token ids + style vector + vocoder noise -> fixed window of 24 kHz audio")


FAMILY = FamilySpec(name="kokoro", load=load, facts=facts,
                    components=(kokoro_component("kokoro_5s"), kokoro_component("kokoro_15s")),
                    build_random=build_random, faithfulness=faithfulness, sample_rate=SAMPLE_RATE)
