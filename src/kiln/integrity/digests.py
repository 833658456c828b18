"""One sha256 cache for every reader of artifact digests (the staleness ledger, ``kiln check``,
integrity checks of job inputs).

A file's digest is remembered by its (size, mtime_ns, ctime_ns, inode): an edit that keeps size and
mtime (``touch -d``, ``os.utime``) still moves ctime, so a cached digest never hides a change. Keys
are absolute paths, so one cache serves jobs, the CLI and the Snakefile whatever their working
directory. A bundle's digest (``.mlpackage``, ``.mlmodelc``, any directory) covers every file inside
in :func:`kiln.foundation.fsutil.sha256_tree`'s order and equals it.

The cache is an optimisation: unreadable or unwritable, it only makes the next check slower. Parallel
jobs may save it at once; the atomic rename keeps it whole, and the last writer's entries win.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from kiln.foundation.errors import KilnError
from kiln.foundation.fsutil import sha256_file, write_json

CACHE_VERSION = 2
#: where the cache lives, relative to the checkout (the working directory of jobs and the CLI)
DEFAULT_PATH = Path(".kiln") / "cache" / "digests.json"
#: overrides the cache's path (tests, read-only checkouts)
PATH_ENV = "KILN_DIGEST_CACHE"
#: Snakemake's directory-output marker: not content (excluded, as by sha256_tree)
MARKER = ".snakemake_timestamp"


def bundle_files(bundle: str | os.PathLike) -> list[str]:
    """The content files of a bundle, in :func:`kiln.foundation.fsutil.sha256_tree`'s order (sorted by
    path components; files and links to files; linked folders not entered, as ``Path.rglob``). Listed
    with ``os.scandir``: every Snakemake start lists every bundle of the results (the ledger), and
    ``rglob`` took half of that time."""
    found: list[str] = []
    pending = [str(Path(bundle))]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue   # as rglob: nothing to list
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)
            elif entry.is_file() and entry.name != MARKER:
                found.append(entry.path)
    return sorted(found, key=lambda path: path.split(os.sep))


def _stamp(file: str) -> list[int]:
    info = os.stat(file)
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino]


class DigestCache:
    """sha256 per file, valid while its (size, mtime_ns, ctime_ns, inode) is unchanged.

    ``DigestCache(None)`` remembers nothing between processes (hashes in memory only)."""

    def __init__(self, path: str | os.PathLike | None = DEFAULT_PATH):
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, list] = {}
        self.dirty = False
        if self.path is not None:
            try:
                data = json.loads(self.path.read_text())
                if data.get("version") == CACHE_VERSION and isinstance(data.get("files"), dict):
                    self.entries = data["files"]
            except (OSError, ValueError, AttributeError):
                pass  # no cache yet, or damaged: hash again

    @classmethod
    def default(cls) -> "DigestCache":
        return cls(os.environ.get(PATH_ENV) or DEFAULT_PATH)

    def file_digest(self, file: str | os.PathLike) -> str:
        key = os.path.abspath(file)
        stamp = _stamp(key)
        entry = self.entries.get(key)
        if isinstance(entry, list) and len(entry) == 5 and entry[:4] == stamp:
            return entry[4]
        digest = sha256_file(key)
        self.entries[key] = [*stamp, digest]
        self.dirty = True
        return digest

    def digest(self, path: str | os.PathLike) -> str:
        """A file's sha256, or a bundle's tree digest (equal to :func:`kiln.foundation.fsutil.sha256_tree`)."""
        if not os.path.isdir(path):
            return self.file_digest(path)
        tree = hashlib.sha256()
        for file in bundle_files(path):
            tree.update(Path(file).relative_to(path).as_posix().encode() + b"\0")
            tree.update(self.file_digest(file).encode() + b"\0")
        return tree.hexdigest()

    def stale_files(self, bundle: str | os.PathLike) -> list[str]:
        """Files inside ``bundle`` whose cached digest no longer applies (edited, added)."""
        out = []
        for file in bundle_files(bundle):
            entry = self.entries.get(os.path.abspath(file))
            if not entry or entry[:4] != _stamp(file):
                out.append(file)
        return out

    def rekey(self, file: str | os.PathLike, digest: str) -> None:
        """Keep ``file``'s known digest valid after its mtime was set (no second hashing)."""
        key = os.path.abspath(file)
        self.entries[key] = [*_stamp(key), digest]
        self.dirty = True

    def forget_missing(self) -> None:
        for key in [k for k in self.entries if not os.path.exists(k)]:
            del self.entries[key]
            self.dirty = True

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        try:
            write_json(self.path, {"version": CACHE_VERSION, "files": self.entries}, sort_keys=True)
        except (KilnError, OSError):
            return  # read-only checkout: the cache is an optimisation, never a failure
        self.dirty = False


def cached_digest(path: str | os.PathLike) -> str:
    """``path``'s digest (file or bundle) through the checkout's cache, which keeps it for every
    later reader (the next job's integrity check, the ledger): a job hashes what it wrote once."""
    cache = DigestCache.default()
    try:
        return cache.digest(path)
    finally:
        cache.save()
