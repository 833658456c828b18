"""Family ``plain``, the validation inputs (the reference job): each input's ``feeds`` entry (speech,
log-mel frames of a named frontend, token ids, random values, recorded ``.npz``, the user's own
function): a table of feed kinds, one small function each (:data:`FEED_KINDS`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from kiln.foundation.errors import ModelError
from kiln.family.spec import NUMPY_DTYPES, Context, Feeds
from kiln.models.plain.hooks import user_callable


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


def _speech_feed(ctx: Context, tensor, spec: Mapping[str, Any], where: str, steps: int | None) -> Column:
    rate = int(spec.get("sample_rate", DEFAULT_SAMPLE_RATE))
    hop = int(spec.get("hop", int(np.prod(tensor.shape))))
    return Column(_speech(ctx, tensor, spec, where),
                  f"{tensor.name}: espeak-ng speech mixed with silence and noise, "
                  f"{float(spec.get('seconds', DEFAULT_SPEECH_SECONDS)):.1f} s at {rate} Hz", hop / rate)


def _log_mel_feed(ctx: Context, tensor, spec: Mapping[str, Any], where: str, steps: int | None) -> Column:
    seconds_per_step = tensor.shape[-1] * int(spec.get("hop", 160)) / int(spec.get("sample_rate", DEFAULT_SAMPLE_RATE))
    return Column(_log_mel(ctx, tensor, spec, where),
                  f"{tensor.name}: {spec.get('frontend', 'kiln_log_mel_db')} frames of espeak-ng speech, "
                  f"{float(spec.get('seconds', DEFAULT_SPEECH_SECONDS)):.1f} s", seconds_per_step)


def _npz_feed(ctx: Context, tensor, spec: Mapping[str, Any], where: str, steps: int | None) -> Column:
    return Column(_npz(ctx.model, tensor, spec, where), f"{tensor.name}: recorded inputs from {spec['path']}")


def _random_feed(ctx: Context, tensor, spec: Mapping[str, Any], where: str, steps: int | None) -> Column:
    count = int(spec.get("steps", steps or DEFAULT_STEPS))
    bounds = f"[{spec.get('low', -1.0)}, {spec.get('high', 1.0)})"
    return Column(_random(tensor, spec, count, False, where), f"{tensor.name}: uniform random in {bounds}")


def _token_ids_feed(ctx: Context, tensor, spec: Mapping[str, Any], where: str, steps: int | None) -> Column:
    count = int(spec.get("steps", steps or DEFAULT_STEPS))
    arrays = _random(tensor, spec, count, True, where)
    return Column(arrays, f"{tensor.name}: token ids in [{spec.get('low', 0)}, {spec['high']})")


def _function_feed(ctx: Context, tensor, spec: Mapping[str, Any], where: str, steps: int | None) -> Column:
    """The user's ``function(shape=[...], dtype="float32", **kwargs)``: one array per step (a
    sequence of arrays of the input's shape, or one array ``[steps, *shape]``)."""
    fn = user_callable(spec["function"], f"{where}.function")
    try:
        values = fn(shape=list(tensor.shape), dtype=tensor.dtype, **dict(spec.get("kwargs") or {}))
    except Exception as exc:  # the user's code: any failure is named with the function
        raise ModelError(f"{where}.function: {spec['function']} raised {type(exc).__name__}: {exc}") from exc
    arrays = [np.asarray(v) for v in values] if not isinstance(values, np.ndarray) else list(values)
    if not arrays:
        raise ModelError(f"{where}.function: {spec['function']} returned no steps")
    for i, array in enumerate(arrays):
        if tuple(array.shape) != tuple(tensor.shape):
            raise ModelError(f"{where}.function: step {i} from {spec['function']} is {list(array.shape)}; "
                             f"the input is {list(tensor.shape)}")
    seconds = spec.get("step_seconds")
    return Column([a.astype(NUMPY_DTYPES[tensor.dtype]) for a in arrays],
                  f"{tensor.name}: from {spec['function']}", float(seconds) if seconds else None)


@dataclass(frozen=True)
class Column:
    """One input's values per step, what they are, and the audio seconds a step covers (if any)."""

    arrays: list
    description: str
    step_seconds: float | None = None


@dataclass(frozen=True)
class FeedKind:
    """How a ``modality`` makes one input's values: ``make(ctx, tensor, spec, where, steps)``, where
    ``steps`` is the count the other inputs fixed (or None). ``fixes_count``: the kind decides its
    own number of steps (speech, recorded arrays, a function), so it runs before the kinds that
    draw to match (random values)."""

    make: Callable[..., Column]
    fixes_count: bool


#: the feed kinds, by ``modality``
FEED_KINDS: dict[str, FeedKind] = {
    "speech": FeedKind(_speech_feed, fixes_count=True),
    "log_mel": FeedKind(_log_mel_feed, fixes_count=True),
    "npz": FeedKind(_npz_feed, fixes_count=True),
    "function": FeedKind(_function_feed, fixes_count=True),
    "random": FeedKind(_random_feed, fixes_count=False),
    "token_ids": FeedKind(_token_ids_feed, fixes_count=False),
}


def feeds(ctx: Context, component) -> Feeds:
    """Every non-state input's values per step, from its ``feeds`` entry (default: uniform in
    [-1, 1]); all inputs must come to the same number of steps."""
    where = f"models.{component.model}.components.{component.name}.feeds"
    carried = set(component.state)
    specs = {}
    for tensor in (t for t in component.inputs if t.name not in carried):
        spec = component.feeds.get(tensor.name)
        if spec is None and tensor.dtype == "int32":
            raise ModelError(f"{where}.{tensor.name}: an integer input needs a feed (modality: token_ids "
                             f"with high: the vocabulary size, or npz)")
        specs[tensor.name] = (tensor, spec or {"modality": "random"})
    columns: dict[str, Column] = {}
    # the kinds that fix their own count first, then the draws to match
    for fixing in (True, False):
        counts = {len(c.arrays) for c in columns.values()}
        known = next(iter(counts)) if len(counts) == 1 else None
        for name, (tensor, spec) in specs.items():
            kind = FEED_KINDS[spec["modality"]]
            if kind.fixes_count == fixing:
                columns[name] = kind.make(ctx, tensor, spec, f"{where}.{name}", known)
    counts = {name: len(c.arrays) for name, c in columns.items()}
    if len(set(counts.values())) > 1:
        raise ModelError(f"{where}: the inputs' feeds give different numbers of steps: {counts}")
    n = next(iter(counts.values()), 1)
    steps = [{name: column.arrays[i] for name, column in columns.items()} for i in range(n)]
    described = "; ".join(columns[name].description for name in _description_order(specs, columns))
    step_seconds = next((c.step_seconds for c in columns.values() if c.step_seconds is not None), None)
    state = f", state carried ({', '.join(f'{o} -> {i}' for i, o in component.state.items())})" if component.state else ""
    return Feeds(steps, described + f"; {n} steps{state}", step_seconds=step_seconds)


def _description_order(specs, columns) -> list[str]:
    """The inputs in the order their values were made (those fixing the count first), as the
    reference record has always described them."""
    first = [n for n, (_, spec) in specs.items() if FEED_KINDS[spec["modality"]].fixes_count]
    return first + [n for n in specs if n not in first]
