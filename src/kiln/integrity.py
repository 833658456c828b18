"""Integrity on read: an artifact is used only if its bytes are the ones its producing job recorded.

Job records (``source.json``, ``export/<c>.json``, ``compile/<c>.json``, ``quantized/<s>/<c>.json``)
hold the sha256 of what the job wrote (``kiln.fsutil.sha256_tree``: a file's digest, or a tree's
digest over relative paths and file digests). After a ``dvc pull`` or a copy, a flipped byte in a
bundle is otherwise noticed only by ``dvc status``: Snakemake plans nothing and ``kiln predict``
answers. :func:`verify_artifact` checks one artifact (for stages, before they consume it);
:func:`check_results` checks a model's whole results tree (``kiln check results/<model>``).

Hashing a multi-GB tree on every read would be slow, so file digests come from
:class:`kiln.digests.DigestCache` (by size, mtime, ctime, inode; shared with the staleness ledger): a
file rewritten in place, touched, or replaced by a pull is hashed again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from kiln import jsonio
from kiln.digests import DigestCache
from kiln.errors import KilnError


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


def _located(model_dir: Path, recorded: str) -> Path:
    """Where a recorded path (written relative to the checkout that built it, e.g.
    ``results/m/x.mlpackage``) lies in the tree being checked: below the model's directory. An
    absolute path that exists is taken as it is: a source file outside the results, such as the
    weights an installed package ships (``…/site-packages/silero_vad/data/silero_vad.jit``, whose
    folder happens to bear the model's name)."""
    if Path(recorded).is_absolute() and Path(recorded).exists():
        return Path(recorded)
    parts = Path(recorded).parts
    if model_dir.name in parts:
        index = len(parts) - 1 - parts[::-1].index(model_dir.name)
        return model_dir.joinpath(*parts[index + 1:])
    return Path(recorded)


def _entries(node, record: Path, model_dir: Path) -> Iterator[RecordedArtifact]:
    """Every ``{"path": ..., "sha256": ...}`` object in a record (packages, bundles, source files)."""
    if isinstance(node, dict):
        if isinstance(node.get("path"), str) and isinstance(node.get("sha256"), str):
            yield RecordedArtifact(_located(model_dir, node["path"]), node["sha256"], record)
        for value in node.values():
            yield from _entries(value, record, model_dir)
    elif isinstance(node, list):
        for value in node:
            yield from _entries(value, record, model_dir)


def recorded_artifacts(model_dir: str | os.PathLike) -> list[RecordedArtifact]:
    """Every artifact the job records under ``model_dir`` name with a digest."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise IntegrityError(f"{model_dir}: not a directory (expected results/<model>)")
    found: dict[Path, RecordedArtifact] = {}
    records = sorted(model_dir.glob("*.json")) + sorted(model_dir.glob("*/**/*.json"))
    for record in records:
        if ".mlpackage" in record.as_posix() or ".mlmodelc" in record.as_posix():
            continue  # files inside bundles are artifacts, not records
        try:
            data = jsonio.read(record)
        except jsonio.JsonFileError as exc:
            raise IntegrityError(f"{record}: unreadable job record ({exc.reason})") from None
        for artifact in _entries(data, record, model_dir):
            found.setdefault(artifact.path, artifact)
    return sorted(found.values(), key=lambda a: str(a.path))


def check_results(model_dir: str | os.PathLike, cache: DigestCache | None = None) -> tuple[list, list[str]]:
    """Check every recorded artifact under ``model_dir``. Returns (artifacts checked, problems),
    each problem one line naming the file."""
    cache = cache or DigestCache.default()
    artifacts = recorded_artifacts(model_dir)
    problems = []
    try:
        for artifact in artifacts:
            try:
                verify_artifact(artifact.path, artifact.sha256, cache)
            except IntegrityError as exc:
                problems.append(f"{exc} [record: {artifact.record}]")
    finally:
        cache.save()
    return artifacts, problems
