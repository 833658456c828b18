"""Integrity on read: an artifact is used only if its bytes are the ones its producing job recorded.

Job records (``source.json``, ``export/<c>.json``, ``compile/<c>.json``, ``quantized/<s>/<c>.json``)
hold the sha256 of what the job wrote (``kiln.foundation.fsutil.sha256_tree``: a file's digest, or a tree's
digest over relative paths and file digests). After a ``dvc pull`` or a copy, a flipped byte in a
bundle is otherwise noticed only by ``dvc status``: Snakemake plans nothing and ``kiln predict``
answers. :func:`verify_artifact` checks one artifact (for stages, before they consume it);
:func:`check_results` checks a model's whole results tree (``kiln check results/<model>``).

Hashing a multi-GB tree on every read would be slow, so file digests come from
:class:`kiln.integrity.digests.DigestCache` (by size, mtime, ctime, inode; shared with the staleness ledger): a
file rewritten in place, touched, or replaced by a pull is hashed again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from kiln.foundation import jsonio
from kiln.integrity.digests import DigestCache
from kiln.foundation.errors import KilnError


class IntegrityError(KilnError):
    """An artifact's bytes differ from what its producing job recorded. Names the file(s)."""


def verify_artifact(path: str | os.PathLike, recorded_sha256: str, cache: DigestCache | None = None) -> None:
    """Raise :class:`IntegrityError` unless ``path`` (file or tree) has the recorded digest."""
    path = Path(path)
    own = cache is None
    cache = cache or DigestCache.default()
    try:
        if not path.exists():
            raise IntegrityError(f"{path}: missing (its record expects sha256 {recorded_sha256[:16]}…)")
        actual = cache.digest(path)
    finally:
        if own:
            cache.save()
    if actual != recorded_sha256:
        raise IntegrityError(f"{path}: content does not match its record (sha256 {actual[:16]}…, recorded "
                             f"{recorded_sha256[:16]}…): corrupted or edited after it was built; rebuild it "
                             f"or pull it again")


@dataclass(frozen=True)
class RecordedArtifact:
    path: Path  # where the artifact is in the tree being checked
    sha256: str
    record: Path  # the JSON record that names it


def _model_prefixes(recorded: str, model: str) -> Iterator[tuple[str, ...]]:
    """The leading parts of a relative recorded path that end with the model's name (``results/m``
    of ``results/m/x.mlpackage``; also ``.venv/…/silero_vad`` of an installed package's weights)."""
    parts = Path(recorded).parts
    for index, part in enumerate(parts[:-1]):
        if part == model:
            yield parts[:index + 1]


def checkout_root(model_dir: Path, recorded: list[str]) -> Path | None:
    """The checkout the records' relative paths were written against (the working directory of the
    build): ``model_dir`` without the recorded results prefix (``results/<model>``), which must be the
    end of ``model_dir``'s own path. None when no recorded path fits (a results folder copied out of
    its checkout)."""
    for where in (Path(os.path.abspath(model_dir)), model_dir.resolve()):   # as named, then with links resolved
        fits = [prefix for path in recorded if not Path(path).is_absolute()
                for prefix in _model_prefixes(path, model_dir.name)
                if len(prefix) < len(where.parts) and where.parts[-len(prefix):] == prefix]
        if fits:
            return Path(*where.parts[:-len(max(fits, key=len))])
    return None


def _located(model_dir: Path, recorded: str, root: Path | None, results_prefix: tuple[str, ...] | None) -> Path:
    """Where a recorded path (written relative to the checkout that built it, e.g.
    ``results/m/x.mlpackage``, or absolute) lies in the tree being checked. A relative path is taken
    against the checkout holding ``model_dir`` (whatever the current directory), so the weights an
    installed package ships (``.venv/…/site-packages/silero_vad/data/silero_vad.jit``, whose folder
    bears the model's name) stay where they are. A results folder copied out of its checkout: paths
    below the results prefix are found below ``model_dir``, others against the current directory."""
    path = Path(recorded)
    if path.is_absolute():
        return path
    if root is not None:
        return root / path
    if results_prefix and path.parts[:len(results_prefix)] == results_prefix:
        return model_dir.joinpath(*path.parts[len(results_prefix):])
    return path


def _entries(node, record: Path) -> Iterator[tuple[str, str, Path]]:
    """(path, sha256, record) of every ``{"path": ..., "sha256": ...}`` object in a record (packages,
    bundles, source files)."""
    if isinstance(node, dict):
        if isinstance(node.get("path"), str) and isinstance(node.get("sha256"), str):
            yield node["path"], node["sha256"], record
        for value in node.values():
            yield from _entries(value, record)
    elif isinstance(node, list):
        for value in node:
            yield from _entries(value, record)


def recorded_artifacts(model_dir: str | os.PathLike) -> list[RecordedArtifact]:
    """Every artifact the job records under ``model_dir`` name with a digest. A recorded relative path
    holding ``..`` is kept as written (it names a place outside the checkout, reported as such)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise IntegrityError(f"{model_dir}: not a directory (expected results/<model>)")
    entries = []
    records = sorted(model_dir.glob("*.json")) + sorted(model_dir.glob("*/**/*.json"))
    for record in records:
        if ".mlpackage" in record.as_posix() or ".mlmodelc" in record.as_posix():
            continue  # files inside bundles are artifacts, not records
        try:
            data = jsonio.read(record)
        except jsonio.JsonFileError as exc:
            raise IntegrityError(f"{record}: unreadable job record ({exc.reason})") from None
        entries += _entries(data, record)
    paths = [path for path, _, _ in entries]
    root = checkout_root(model_dir, paths)
    prefixes = [p for path in paths if not Path(path).is_absolute() for p in _model_prefixes(path, model_dir.name)]
    results_prefix = min(prefixes, key=len) if prefixes else None
    found: dict[Path, RecordedArtifact] = {}
    for path, sha256, record in entries:
        located = Path(path) if ".." in Path(path).parts else _located(model_dir, path, root, results_prefix)
        found.setdefault(located, RecordedArtifact(located, sha256, record))
    return sorted(found.values(), key=lambda a: str(a.path))


def check_results(model_dir: str | os.PathLike, cache: DigestCache | None = None) -> tuple[list, list[str]]:
    """Check every recorded artifact under ``model_dir``. Returns (artifacts checked, problems),
    each problem one line naming the file."""
    cache = cache or DigestCache.default()
    artifacts = recorded_artifacts(model_dir)
    problems = []
    try:
        for artifact in artifacts:
            if ".." in artifact.path.parts:
                problems.append(f"{artifact.path}: a recorded path leaving the checkout (not read) "
                                f"[record: {artifact.record}]")
                continue
            try:
                verify_artifact(artifact.path, artifact.sha256, cache)
            except IntegrityError as exc:
                problems.append(f"{exc} [record: {artifact.record}]")
    finally:
        cache.save()
    return artifacts, problems
