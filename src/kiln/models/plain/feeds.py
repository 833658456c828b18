"""Family ``plain``, the validation inputs (the reference job): each input's ``feeds`` entry (speech,
log-mel frames of a named frontend, token ids, random values, recorded ``.npz``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from kiln.foundation.errors import ModelError
from kiln.family.spec import NUMPY_DTYPES, Context, Feeds


DEFAULT_STEPS = 8


DEFAULT_SPEECH_SECONDS = 10.0


DEFAULT_SAMPLE_RATE = 16_000


def _speech(ctx: Context, tensor, spec: Mapping[str, Any], where: str) -> list[np.ndarray]:
    """Windows of the input's size that advance by ``hop`` samples: each window is the previous
    window's last ``size - hop`` samples (zeros at first) followed by ``hop`` new ones."""
    size = int(np.prod(tensor.shape))
    hop = int(spec.get("hop", size))
    if hop > size:
        raise ModelError(f"{where}.hop: {hop} is more than the input's {size} samples")
    rate = int(spec.get("sample_rate", DEFAULT_SAMPLE_RATE))
    seconds = float(spec.get("seconds", DEFAULT_SPEECH_SECONDS))
    seed = int(spec.get("seed", 0))
    audio = ctx.memo(f"speech:{seconds}:{rate}:{seed}", lambda: ctx.speech(seconds, rate=rate, seed=seed))
    context = np.zeros(size - hop, dtype=np.float32)
    steps = []
    for start in range(0, audio.size - hop + 1, hop):
        window = np.concatenate([context, audio[start:start + hop]]).astype(np.float32)
        steps.append(window.reshape(tensor.shape).astype(NUMPY_DTYPES[tensor.dtype]))
        context = window[hop:] if size > hop else context
    if not steps:
        raise ModelError(f"{where}: {seconds} s of audio is shorter than one hop ({hop} samples)")
    return steps


def _kiln_log_mel(audio: np.ndarray, rate: int, bands: int, n_fft: int, hop: int) -> np.ndarray:
    """kiln's stock frontend: 10 log10 of HTK mel power, Hann window (kiln.validate.audio.log_mel)."""
    from kiln.validate.audio import log_mel

    return log_mel(audio, rate, n_fft=n_fft, hop=hop, n_mels=bands)


#: named frontends a ``log_mel`` feed computes frames with: (audio, rate, bands, n_fft, hop) -> [bands, frames]
FRONTENDS = {"kiln_log_mel_db": _kiln_log_mel}


def _log_mel(ctx: Context, tensor, spec: Mapping[str, Any], where: str) -> list[np.ndarray]:
    """Mel frames of speech from a named frontend, cut into the input's ``[..., bands, frames]``
    windows one after the other."""
    if len(tensor.shape) < 2:
        raise ModelError(f"{where}: a log_mel feed needs an input [..., bands, frames], not {list(tensor.shape)}")
    bands, frames = tensor.shape[-2:]
    name = spec.get("frontend", "kiln_log_mel_db")
    if name not in FRONTENDS:
        raise ModelError(f"{where}.frontend: unknown frontend '{name}' (known: {', '.join(FRONTENDS)})")
    rate = int(spec.get("sample_rate", DEFAULT_SAMPLE_RATE))
    seconds = float(spec.get("seconds", DEFAULT_SPEECH_SECONDS))
    n_fft, hop = int(spec.get("n_fft", 400)), int(spec.get("hop", 160))
    audio = ctx.memo(f"speech:{seconds}:{rate}:0", lambda: ctx.speech(seconds, rate=rate, seed=0))
    mel = FRONTENDS[name](audio, rate, bands, n_fft, hop)
    steps = [mel[:, i:i + frames].reshape(tensor.shape).astype(NUMPY_DTYPES[tensor.dtype])
             for i in range(0, mel.shape[1] - frames + 1, frames)]
    if not steps:
        raise ModelError(f"{where}: {seconds} s of speech gives {mel.shape[1]} frames, fewer than the "
                         f"input's {frames}")
    return steps


def _random(tensor, spec: Mapping[str, Any], steps: int, integers: bool, where: str) -> list[np.ndarray]:
    rng = np.random.default_rng(int(spec.get("seed", 0)))
    if integers:
        if "high" not in spec:
            raise ModelError(f"{where}.high: token_ids need an upper bound (the vocabulary size)")
        low, high = int(spec.get("low", 0)), int(spec["high"])
        if high <= low:
            raise ModelError(f"{where}: high {high} must exceed low {low}")
        return [rng.integers(low, high, size=tensor.shape).astype(NUMPY_DTYPES[tensor.dtype]) for _ in range(steps)]
    low, high = float(spec.get("low", -1.0)), float(spec.get("high", 1.0))
    if high <= low:
        raise ModelError(f"{where}: high {high} must exceed low {low}")
    return [rng.uniform(low, high, size=tensor.shape).astype(NUMPY_DTYPES[tensor.dtype]) for _ in range(steps)]


def _npz(model, tensor, spec: Mapping[str, Any], where: str) -> list[np.ndarray]:
    path = Path(spec["path"]) if Path(spec["path"]).is_absolute() else Path(model.config_dir) / spec["path"]
    key = spec.get("key", tensor.name)
    try:
        with np.load(path, allow_pickle=False) as data:
            if key not in data.files:
                raise ModelError(f"{where}: {path} has no array '{key}' (it has: {', '.join(data.files)})")
            array = np.asarray(data[key])
    except (OSError, ValueError) as exc:
        raise ModelError(f"{where}.path: cannot read {path}: {exc}") from None
    if array.shape == tensor.shape:
        array = array[None]
    if array.shape[1:] != tensor.shape:
        raise ModelError(f"{where}: '{key}' in {path} is {list(array.shape)}; expected [steps, "
                         f"{', '.join(map(str, tensor.shape))}]")
    return [a.astype(NUMPY_DTYPES[tensor.dtype]) for a in array]


def feeds(ctx: Context, component) -> Feeds:
    """Every non-state input's values per step, from its ``feeds`` entry (default: uniform in
    [-1, 1]); all inputs must come to the same number of steps."""
    where = f"models.{component.model}.components.{component.name}.feeds"
    carried = set(component.state)
    tensors = [t for t in component.inputs if t.name not in carried]
    columns: dict[str, list[np.ndarray]] = {}
    described, step_seconds = [], None
    # what fixes its own count first (speech, recorded arrays), then random values to match
    for tensor in tensors:
        spec = component.feeds.get(tensor.name, {"modality": "random"})
        at = f"{where}.{tensor.name}"
        if spec["modality"] == "speech":
            columns[tensor.name] = _speech(ctx, tensor, spec, at)
            rate = int(spec.get("sample_rate", DEFAULT_SAMPLE_RATE))
            step_seconds = int(spec.get("hop", int(np.prod(tensor.shape)))) / rate
            described.append(f"{tensor.name}: espeak-ng speech mixed with silence and noise, "
                             f"{float(spec.get('seconds', DEFAULT_SPEECH_SECONDS)):.1f} s at {rate} Hz")
        elif spec["modality"] == "log_mel":
            columns[tensor.name] = _log_mel(ctx, tensor, spec, at)
            step_seconds = tensor.shape[-1] * int(spec.get("hop", 160)) / int(spec.get("sample_rate", DEFAULT_SAMPLE_RATE))
            described.append(f"{tensor.name}: {spec.get('frontend', 'kiln_log_mel_db')} frames of espeak-ng "
                             f"speech, {float(spec.get('seconds', DEFAULT_SPEECH_SECONDS)):.1f} s")
        elif spec["modality"] == "npz":
            columns[tensor.name] = _npz(ctx.model, tensor, spec, at)
            described.append(f"{tensor.name}: recorded inputs from {spec['path']}")
    counts = {len(v) for v in columns.values()}
    for tensor in tensors:
        if tensor.name in columns:
            continue
        spec = component.feeds.get(tensor.name)
        if spec is None and tensor.dtype == "int32":
            raise ModelError(f"{where}.{tensor.name}: an integer input needs a feed (modality: token_ids "
                             f"with high: the vocabulary size, or npz)")
        spec = spec or {"modality": "random"}
        steps = int(spec.get("steps", next(iter(counts)) if len(counts) == 1 else DEFAULT_STEPS))
        integers = spec["modality"] == "token_ids"
        columns[tensor.name] = _random(tensor, spec, steps, integers, f"{where}.{tensor.name}")
        bounds = (f"[{spec.get('low', 0)}, {spec['high']})" if integers
                  else f"[{spec.get('low', -1.0)}, {spec.get('high', 1.0)})")
        described.append(f"{tensor.name}: {'token ids' if integers else 'uniform random'} in {bounds}")
    counts = {name: len(v) for name, v in columns.items()}
    if len(set(counts.values())) > 1:
        raise ModelError(f"{where}: the inputs' feeds give different numbers of steps: {counts}")
    n = next(iter(counts.values()), 1)
    steps = [{name: columns[name][i] for name in columns} for i in range(n)]
    state = f", state carried ({', '.join(f'{o} -> {i}' for i, o in component.state.items())})" if component.state else ""
    return Feeds(steps, "; ".join(described) + f"; {n} steps{state}", step_seconds=step_seconds)
