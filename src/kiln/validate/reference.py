"""The reference stage's files: validation inputs and the source model's outputs, written once per
model (``results/<model>/reference/<component>.npz``) and read by parity, quantization scoring, the
compile round trip and the end-to-end check, none of which loads the source again.

One ``.npz`` per component holds, stacked over steps: ``feed.<input>`` (the non-state inputs of every
step), ``init.<input>`` (the state inputs of the first step), ``out.<output>`` (the torch outputs of
every step) and ``meta`` (JSON: description, seconds per step, torch latency). The zip is written
deterministically (sorted entries, fixed timestamps) so the same values give the same bytes and an
unchanged reference does not make later jobs stale.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from kiln.foundation.errors import KilnError
from kiln.foundation.fsutil import atomic_file

#: zip entry timestamp of every array (the earliest a zip can hold): bytes depend on values only
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class ReferenceError(KilnError):
    """A reference file is missing, corrupt or does not match the component's contract."""


def write_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez`` with deterministic bytes, written atomically."""
    with atomic_file(path, "wb") as handle:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
            for name in sorted(arrays):
                buffer = io.BytesIO()
                value = np.asarray(arrays[name])   # (ascontiguousarray would turn 0-d into 1-d)
                np.lib.format.write_array(buffer, value if value.flags.c_contiguous else value.copy(order="C"),
                                          allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_EPOCH)
                info.external_attr = 0o644 << 16
                archive.writestr(info, buffer.getvalue())


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise ReferenceError(f"{path}: reference file not found; run the reference job") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ReferenceError(f"{path}: not a readable .npz reference file ({exc})") from None


def _stack(steps: list[Mapping[str, np.ndarray]], names, where: str) -> dict[str, np.ndarray]:
    out = {}
    for name in names:
        try:
            out[name] = np.stack([np.asarray(s[name]) for s in steps])
        except KeyError:
            raise ReferenceError(f"{where}: a step has no '{name}'") from None
        except ValueError as exc:
            raise ReferenceError(f"{where}: '{name}' changes shape between steps ({exc})") from None
    return out


@dataclass(frozen=True)
class Reference:
    """One component's validation inputs and source outputs."""

    feeds: list[dict[str, np.ndarray]]
    initial: dict[str, np.ndarray]
    outputs: list[dict[str, np.ndarray]]
    meta: dict[str, Any]

    @property
    def steps(self) -> int:
        return len(self.feeds)

    def first_inputs(self) -> dict[str, np.ndarray]:
        """The complete inputs of the first step (feeds + initial state)."""
        return {**self.feeds[0], **self.initial}


def make_reference(ctx, component) -> Reference:
    """Run ``component``'s validation feeds through its torch program (``ctx``, a
    :class:`kiln.family.spec.Context`), state carried by the generic driver; time every call."""
    from kiln.family.spec import stream
    from kiln.validate.timing import latency_summary, timed

    spec = ctx.family.check_contract(component)
    feeds = spec.validation_feeds(ctx, component)
    if not feeds.steps:
        raise ReferenceError(f"{component.model}/{component.name}: the family made no validation steps")
    initial = spec.initial_state(component, ctx.facts)
    predict, times = timed(ctx.torch(component.name))
    outputs = stream(predict, spec, feeds.steps, initial, component)
    meta = {"description": feeds.description, "step_seconds": feeds.step_seconds,
            "torch_latency": latency_summary(times), "synthetic": bool(ctx.model.synthetic)}
    return Reference(feeds=list(feeds.steps), initial=initial, outputs=outputs, meta=meta)


def torch_context(family, source, model):
    """A reference context from a loaded source (tests, benchmarks): the wrappers run untraced."""
    from kiln.family.spec import Context
    from kiln.validate.backends import torch_backend

    facts = family.facts(source)
    predictors = {name: torch_backend(family.build_component(source, c, facts), c).predict
                  for name, c in model.components.items()}
    return Context(family=family, model=model, facts=facts, predictors=predictors)


def write_reference(path: str | Path, reference: Reference) -> None:
    where = str(path)
    feeds, outputs = reference.feeds, reference.outputs
    if not feeds or len(feeds) != len(outputs):
        raise ReferenceError(f"{where}: {len(feeds)} feed steps and {len(outputs)} output steps")
    arrays = {f"feed.{k}": v for k, v in _stack(feeds, sorted(feeds[0]), where).items()}
    arrays.update({f"init.{k}": np.asarray(v) for k, v in reference.initial.items()})
    arrays.update({f"out.{k}": v for k, v in _stack(outputs, sorted(outputs[0]), where).items()})
    arrays["meta"] = np.array(json.dumps(dict(reference.meta), sort_keys=True))
    write_npz(path, arrays)


def load_reference(path: str | Path, component=None) -> Reference:
    """Read ``path``; with ``component`` (its ComponentConfig), check the names against its contract."""
    data = read_npz(path)
    try:
        meta = json.loads(str(data.pop("meta")))
    except KeyError:
        raise ReferenceError(f"{path}: no 'meta' entry; not a kiln reference file") from None
    groups: dict[str, dict[str, np.ndarray]] = {"feed": {}, "init": {}, "out": {}}
    for key, value in data.items():
        kind, _, name = key.partition(".")
        if kind not in groups:
            raise ReferenceError(f"{path}: unexpected entry '{key}'")
        groups[kind][name] = value
    steps = {len(v) for v in list(groups["feed"].values()) + list(groups["out"].values())}
    if len(steps) != 1:
        raise ReferenceError(f"{path}: entries disagree on the number of steps ({sorted(steps)})")
    n = steps.pop()
    if component is not None:
        inputs = {t.name for t in component.inputs}
        outputs = {t.name for t in component.outputs}
        given = set(groups["feed"]) | set(groups["init"])
        if given != inputs or set(groups["out"]) != outputs:
            raise ReferenceError(f"{path}: holds inputs {sorted(given)} and outputs {sorted(groups['out'])}; "
                                 f"{component.model}/{component.name} declares {sorted(inputs)} -> "
                                 f"{sorted(outputs)}; re-run the reference job")
    feeds = [{k: v[i] for k, v in groups["feed"].items()} for i in range(n)]
    outs = [{k: v[i] for k, v in groups["out"].items()} for i in range(n)]
    return Reference(feeds=feeds, initial=groups["init"], outputs=outs, meta=meta)
