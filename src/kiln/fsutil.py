"""Atomic filesystem writes: a job killed half-way never leaves an artifact a later run takes as done.

Every artifact is written to a temporary sibling path (same directory, so the final ``rename`` is
atomic on POSIX) and renamed into place only once it is complete.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def remove_stale_temporaries(path: Path) -> None:
    """Delete temporaries a killed writer of ``path`` left behind (one writer per path at a time:
    Snakemake never runs two jobs with the same output)."""
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            remove_path(stale)


def _tmp_sibling(path: Path, kind: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=f".{kind}.tmp", dir=path.parent))


def remove_path(path: Path) -> None:
    """Remove a file, symlink or directory tree if it exists."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``path`` (a directory such as an
    ``.mlpackage``), on failure it is deleted and ``path`` is left as it was."""
    path = Path(path)
    holder = _tmp_sibling(path, "dir")
    staging = holder / path.name
    staging.mkdir()
    try:
        yield staging
        if path.exists() or path.is_symlink():
            # Move the old artifact aside first so the swap is never observed half-done.
            old = holder / (path.name + ".old")
            os.rename(path, old)
        os.rename(staging, path)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator:
    """Open a temporary sibling file for writing; rename it to ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; artifacts are ordinary files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_json(path: str | os.PathLike, data, *, sort_keys: bool = False) -> None:
    """Write JSON atomically, UTF-8, two-space indent, trailing newline."""
    with atomic_file(path) as handle:
        json.dump(data, handle, indent=2, sort_keys=sort_keys, allow_nan=False)
        handle.write("\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(path: str | os.PathLike) -> str:
    """A content hash of a file or directory: relative paths and file bytes, in sorted order."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.name != ".snakemake_timestamp"):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(sha256_file(file).encode() + b"\0")
    return digest.hexdigest()


def tree_size(path: str | os.PathLike) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling *path* for writers that stream to a file name themselves (e.g.
    ``torch.jit.save``, which would otherwise build a multi-GB archive in memory for a file object);
    renamed to ``path`` when the block succeeds, removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
