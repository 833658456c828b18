"""Atomic filesystem writes: a job killed half-way never leaves an artifact a later run takes as done.

Every artifact is written to a temporary sibling path (same directory, so the final ``rename`` is
atomic on POSIX) and renamed into place only once it is complete.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import mmap
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

from kiln.foundation.errors import OutputError


#: glob of every temporary a writer of a path leaves while it works (and a killed writer leaves
#: behind): ``.<name>.<random>.tmp`` files and ``.<name>.<random>.dir.tmp`` directories.
#: `.dvcignore` lists the same pattern so a crash's leftovers are never published.
TEMPORARY_GLOB = ".*.tmp"


def temporaries_of(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp")) if path.parent.is_dir() else []


def remove_stale_temporaries(path: Path) -> None:
    """Delete temporaries a killed writer of ``path`` left behind (one writer per path at a time:
    Snakemake never runs two jobs with the same output)."""
    for stale in temporaries_of(path):
        remove_path(stale)


def _tmp_sibling(path: Path, kind: str) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=f".{kind}.tmp", dir=path.parent))
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror} ({exc.filename})") from None


def remove_path(path: Path) -> None:
    """Remove a file, symlink or directory tree if it exists."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def check_output(path: Path, *, replaceable: Callable[[Path], bool] | None, kind: str,
                 inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Refuse to write ``path`` where it would destroy something kiln did not make.

    The output may not be, contain or lie inside one of ``inputs``; an existing ``path`` is replaced
    only when ``replaceable(path)`` says it is a ``kind`` that kiln wrote (a real directory, not a
    symlink, holding only that kind's files). Returns ``path`` made absolute (``-o .`` names the
    current directory, not an empty name)."""
    target = Path(os.path.abspath(path))
    for source in inputs:
        source = Path(os.path.abspath(source))
        if target == source or source in target.parents or target in source.parents:
            relation = "is" if target == source else ("is inside" if source in target.parents else "contains")
            raise OutputError(f"output {path} {relation} the input {source}; choose another output path")
    if os.path.lexists(target):
        if target.is_symlink() or not target.is_dir() or replaceable is None or not replaceable(target):
            raise OutputError(f"refusing to replace {path}: it exists and is not {kind} kiln wrote "
                              f"(kiln only replaces its own outputs; remove it yourself or choose another path)")
    return target


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, replaceable: Callable[[Path], bool] | None = None,
               kind: str = "an output", inputs: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``path`` (a directory such as an
    ``.mlpackage``), on failure it is deleted and ``path`` is left as it was.

    An existing ``path`` is replaced only when ``replaceable(path)`` is true (see
    :func:`check_output`); the check runs before anything is created, and again just before the
    swap (another process may have put something there meanwhile)."""
    path = check_output(Path(path), replaceable=replaceable, kind=kind, inputs=inputs)
    holder = _tmp_sibling(path, "dir")
    staging = holder / path.name
    try:
        staging.mkdir()
        yield staging
        check_output(path, replaceable=replaceable, kind=kind, inputs=inputs)
        if os.path.lexists(path):
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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror} ({exc.filename})") from None
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


#: files at least this big are hashed through a read-only mapping (below: reads, 1 MiB at a time)
MAP_HASH_MIN_BYTES = 16 << 20


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """A file's sha256. A large file is hashed in one call over a read-only mapping: hashlib drops
    the GIL for the whole call, so a hashing thread keeps its speed beside busy Python code (in 1 MiB
    reads it waits up to the 5 ms switch interval for the GIL after every chunk: a GB-size weight
    file took 12 s instead of 0.8 s). Like every mapped reader, it assumes the file is replaced by
    rename, not truncated in place while hashed (kiln's writers rename)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size >= MAP_HASH_MIN_BYTES:
            try:
                mapping = mmap.mmap(handle.fileno(), 0, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                                    prot=mmap.PROT_READ)
            except (OSError, ValueError):
                mapping = None  # not mappable (a pipe, a special file system): read it
            if mapping is not None:
                with mapping:
                    digest.update(mapping)
                return digest.hexdigest()
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


def irregular_entries(root: str | os.PathLike) -> list[str]:
    """``"<relative path> (<what it is>)"`` for every entry below ``root`` that is neither a regular
    file nor a real directory: symbolic links (never followed: a linked folder is not entered), FIFOs,
    sockets, devices. What kiln ships or compares must hold none (a link would carry a host file)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):   # os.walk does not follow links
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            mode = os.lstat(full).st_mode
            rel = os.path.relpath(full, root)
            if stat.S_ISLNK(mode):
                out.append(f"{rel} (a symbolic link to {os.readlink(full)})")
            elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                out.append(f"{rel} (not a regular file)")
    return sorted(out)


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
