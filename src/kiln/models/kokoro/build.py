"""Kokoro's build part: restore the checkpoint (a random bundle, or config + weights + voice pack), the facts, the token buffer, the fixed-shape wrapper (:class:`kiln.models.kokoro.net.FixedKokoro`), tracing inputs, and the faithfulness check against kokoro's own ``KModel.forward_with_tokens``."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from kiln.config import ComponentConfig
from kiln.foundation.errors import ModelError, SourceError
from kiln.family.spec import require_fact
from kiln.models.kokoro.checkpoint import BUNDLE_FORMAT, build_kmodel
from kiln.models.kokoro.contract import contract_lengths, make_feed, phonemes_to_ids, voice_rows
from kiln.models.kokoro.net import FixedKokoro, FixedKokoroComponent
from kiln.models.kokoro.waveform import waveform_metrics
from kiln.sources import SourceRecord


VALIDATION_TEXT = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella.",
    "Core ML models run on the neural engine of iPhone and Mac, and kiln checks that they compute "
    "what the source computes, sentence after sentence, for as long as this one goes on and on.",
)


@dataclass
class KokoroSource:
    """What ``load`` restores: the kokoro model, its config and the voice packs."""
    model: nn.Module
    config: dict
    voices: dict[str, torch.Tensor]
    synthetic: bool


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


def wrapper(source: KokoroSource, component: ComponentConfig, facts_: Mapping[str, Any]) -> nn.Module:
    max_tokens, samples, _ = contract_lengths(component)
    net = FixedKokoro(source.model, max_tokens, samples)
    return FixedKokoroComponent(net, [s.name for s in component.inputs])


def example(component: ComponentConfig, facts_: Mapping[str, Any], rng: np.random.Generator) -> dict:
    """Tracing inputs: a third of the buffer valid (the padding path must be the traced one: with no
    padding, transformers skips building ALBERT's attention mask)."""
    symbols = sorted(facts_["vocab"])
    count = max(1, contract_lengths(component)[0] // 3)
    phonemes = "".join(symbols[int(i)] for i in rng.integers(0, len(symbols), size=count))
    return make_feed(facts_, component, phonemes, seed=int(rng.integers(0, 2**31)))


#: seed of kokoro's random draws in the faithfulness check
FAITHFULNESS_SEED = 0


def _kokoro_forward(source: KokoroSource, facts_: Mapping[str, Any], text: str) -> tuple[Any, ...]:
    """kokoro's ``KModel.forward_with_tokens`` on ``text``: ``(ids, ref_s, audio, durations, draws)``.
    Its draws come from a fixed seed: the record is the same in every build (verify compares it)."""
    from kiln.export import rewrites as rw

    ids, _ = phonemes_to_ids(text, facts_["vocab"], len(text) + 2)
    ref_s = torch.from_numpy(voice_rows(facts_)[len(text) - 1].reshape(1, -1).copy())
    with torch.random.fork_rng(), rw.record_random() as draws, torch.no_grad():
        torch.manual_seed(FAITHFULNESS_SEED)
        audio, dur = source.model.forward_with_tokens(torch.from_numpy(ids).long(), ref_s, 1)
    return ids, ref_s, audio, dur, draws


def faithfulness_input(source: KokoroSource, facts_: Mapping[str, Any],
                       windows: Mapping[str, tuple[int, int]]) -> tuple[dict, tuple[Any, ...]]:
    """The phonemes the faithfulness check runs: the shortest validation sentence, or, when kokoro's
    own output for it does not fit every component's window (``windows``: name -> ``(max_tokens,
    samples)``), its longest prefix found that does. Random weights predict long durations (the
    full-size stand-in speaks 22 tokens in 13.75 s, beyond kokoro_5s), so the stand-in's sentence
    is cut; the real model's fits whole. Returns ``(choice record, _kokoro_forward's result)``; a
    :class:`ModelError` names the windows when not even one phoneme fits."""
    sentence = min(require_fact(facts_, "validation_phonemes", "kokoro"), key=len)
    max_tokens = min(tokens for tokens, _ in windows.values())
    samples = min(n for _, n in windows.values())
    text = sentence[:max_tokens - 2]
    tried = []
    while text:
        run = _kokoro_forward(source, facts_, text)
        n = run[2].numel()
        tried.append({"phonemes": len(text), "samples": n})
        if n <= samples:
            return {"sentence_phonemes": sentence, "phonemes": text, "cut": text != sentence,
                    "tokens": len(text) + 2, "samples": n, "window": {"tokens": max_tokens, "samples": samples},
                    "tried": tried}, run
        # audio grows about linearly with the tokens: jump to the estimate, then step down
        estimate = (len(text) + 2) * samples // n - 2
        text = text[:max(0, min(len(text) - 1, estimate))]
    attempts = ", ".join(f"{t['phonemes']} phonemes -> {t['samples']} samples" for t in tried)
    raise ModelError(f"kokoro: the faithfulness sentence ({len(sentence) + 2} tokens) has no prefix whose audio "
                     f"fits {', '.join(sorted(windows))} ({max_tokens} tokens, {samples} samples); tried {attempts}")


def faithfulness(source: KokoroSource, predictors: Mapping[str, Any], facts_: Mapping[str, Any],
                 components: Mapping[str, Any] | None = None) -> dict:
    """Every traced program (as the later jobs run it) against kokoro's own
    ``KModel.forward_with_tokens`` on identical inputs: the unpadded ids of the shortest validation
    sentence (cut to fit the windows, :func:`faithfulness_input`; the record says so), the same
    style row, and kokoro's random draws recorded and passed in as ``random_phases`` /
    ``source_noise`` (zero-padded to the component's window). The program sees the ids in its fixed
    token buffer with padding and a window longer than the sentence, so the masks are exercised. Per
    component: pred_dur equality, waveform correlation, log-mel distance, max abs error over
    kokoro's samples."""
    if components is None:
        raise ModelError("kokoro: faithfulness needs the model's component contracts")
    windows = {name: contract_lengths(components[name])[:2] for name in predictors}
    choice, (_, ref_s, audio, dur, draws) = faithfulness_input(source, facts_, windows)
    text, length = choice["phonemes"], choice["tokens"]
    # The vocoder reads the angle of its harmonic source's STFT, which jumps by 2*pi where the
    # spectrum crosses the negative real axis, so rounding-level differences between torch.stft and
    # the program's conv STFT can move a few bins across it: measured over 8 noise draws of the tiny
    # model, max abs error 1e-5 to 0.22 and correlation >= 0.99987; a one-sample misalignment of the
    # noise gives 0.15.
    n = audio.numel()
    ref = {"audio": audio.numpy()[None], "audio_length": np.array([n]), "clamped": np.array([0]),
           "pred_dur": dur.numpy().astype(np.int32)}
    report = {}
    for name in sorted(predictors):
        component = components[name]
        max_tokens, samples, _ = contract_lengths(component)
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
    return {"input": choice, "traced_program_vs_kokoro_forward": report}
