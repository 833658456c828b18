"""Staleness by content: a byte-identical rewrite does not make Snakemake rebuild anything.

Snakemake plans a job when an input's mtime is newer than the job's oldest output; DVC decides by
content digests. kiln bridges the two with a **ledger** (``results/.kiln-ledger.json``, versioned by
DVC with the results): for every file the workflow's staleness depends on (results, settings stamps,
the kiln source and the job scripts) it holds the content digest and the mtime the file had when a
run last observed it. At start-up, :meth:`Ledger.restore` gives every file whose content still
equals its recorded digest, but whose mtime moved, its recorded mtime back. So:

- opening a package with coremltools (which rewrites ``Manifest.json`` with the same bytes), a
  ``git checkout`` away and back, or a setting edited then reverted (its stamp returns to the
  recorded content) plans nothing;
- after ``git clone`` + ``dvc pull`` every pulled output and checked-out source file returns to the
  mtime it had where it was built, so the build's own order of mtimes holds again and nothing is
  planned; a file whose content differs keeps its new mtime, so a real edit plans its jobs.

:meth:`Ledger.record` runs when a real run starts (before any job: every output a run builds comes
from inputs whose content the ledger then holds) and when it ends (the new outputs). Dry runs only
restore. A restored mtime is always one the file had with the very same content.

Snakemake 9 takes a directory output's mtime from its ``.snakemake_timestamp`` marker if there is
one, else from the directory itself (``snakemake/io/__init__.py: mtime_uncached``), not from the
files inside. Bundles (``.mlpackage``, ``.mlmodelc``) are therefore single entries: their digest
covers every file inside (as :func:`kiln.fsutil.sha256_tree`), their mtime is the marker's or the
directory's, and a restore sets both.

Digests are cached in ``.kiln/cache/digests.json`` per file by (size, mtime, inode), so start-up
hashes only files whose mtime moved.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from kiln.errors import KilnError
from kiln.fsutil import sha256_file, write_json

LEDGER_VERSION = 1
DIGEST_CACHE = Path(".kiln") / "cache" / "digests.json"
#: directory outputs: Snakemake sees one mtime for the whole bundle
BUNDLE_SUFFIXES = (".mlpackage", ".mlmodelc")
#: Snakemake's directory-output marker (not content: excluded from digests, as by sha256_tree)
MARKER = ".snakemake_timestamp"


class LedgerError(KilnError):
    """An unreadable ledger."""


def _skipped(name: str) -> bool:
    """Temporaries, markers, the ledger itself, byte-code: not content the workflow depends on."""
    return name.startswith(".") or name == "__pycache__" or name.endswith((".pyc", ".tmp"))


def tracked_paths(roots: Iterable[str | os.PathLike]) -> list[str]:
    """Every file under ``roots`` plus every bundle directory (as one path), sorted."""
    out: list[str] = []
    for root in roots:
        root = str(root)
        if os.path.isfile(root):
            out.append(root)
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not _skipped(d))
            for name in list(dirnames):
                if name.endswith(BUNDLE_SUFFIXES):
                    out.append(os.path.join(dirpath, name))
                    dirnames.remove(name)  # a bundle is one unit
            out.extend(os.path.join(dirpath, f) for f in filenames if not _skipped(f))
    return sorted(set(out))


def visible_mtime_ns(path: str) -> int:
    """The mtime Snakemake compares for ``path`` (a bundle: its marker's if present)."""
    if os.path.isdir(path):
        try:
            return os.stat(os.path.join(path, MARKER)).st_mtime_ns
        except FileNotFoundError:
            pass
    return os.stat(path).st_mtime_ns


def set_visible_mtime(path: str, mtime_ns: int) -> None:
    if os.path.isdir(path):
        marker = os.path.join(path, MARKER)
        if os.path.exists(marker):
            os.utime(marker, ns=(mtime_ns, mtime_ns))
    os.utime(path, ns=(mtime_ns, mtime_ns))


def _bundle_files(bundle: str) -> list[str]:
    """The content files of a bundle, in :func:`kiln.fsutil.sha256_tree`'s order."""
    return [str(p) for p in sorted(Path(bundle).rglob("*")) if p.is_file() and p.name != MARKER]


def newest_file_mtime_ns(bundle: str) -> int:
    return max((os.stat(f).st_mtime_ns for f in _bundle_files(bundle)), default=0)


@dataclass
class DigestCache:
    """sha256 per file, valid while its (size, mtime_ns, inode) is unchanged."""

    path: Path = DIGEST_CACHE
    entries: dict[str, list] = field(default_factory=dict)
    dirty: bool = False

    @classmethod
    def load(cls, path: Path = DIGEST_CACHE) -> "DigestCache":
        try:
            data = json.loads(path.read_text())
            entries = data["files"] if data.get("version") == LEDGER_VERSION else {}
        except (OSError, ValueError, KeyError, AttributeError):
            entries = {}  # no cache yet or unreadable: hash again
        return cls(path, entries)

    def file_digest(self, file: str) -> str:
        stat = os.stat(file)
        key = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        entry = self.entries.get(file)
        if entry and entry[:3] == key:
            return entry[3]
        digest = sha256_file(file)
        self.entries[file] = key + [digest]
        self.dirty = True
        return digest

    def stale_files(self, bundle: str) -> list[str]:
        """Files inside ``bundle`` whose cached digest no longer applies (edited, added)."""
        out = []
        for file in _bundle_files(bundle):
            stat = os.stat(file)
            entry = self.entries.get(file)
            if not entry or entry[:3] != [stat.st_size, stat.st_mtime_ns, stat.st_ino]:
                out.append(file)
        return out

    def rekey(self, file: str, digest: str) -> None:
        """Keep ``file``'s known digest valid after its mtime was set (no second hashing)."""
        stat = os.stat(file)
        self.entries[file] = [stat.st_size, stat.st_mtime_ns, stat.st_ino, digest]
        self.dirty = True

    def digest(self, path: str) -> str:
        """A file's sha256, or a bundle's tree digest (equal to :func:`kiln.fsutil.sha256_tree`)."""
        if not os.path.isdir(path):
            return self.file_digest(path)
        tree = hashlib.sha256()
        for file in _bundle_files(path):
            tree.update(Path(file).relative_to(path).as_posix().encode() + b"\0")
            tree.update(self.file_digest(file).encode() + b"\0")
        return tree.hexdigest()

    def forget_missing(self) -> None:
        for file in [f for f in self.entries if not os.path.exists(f)]:
            del self.entries[file]
            self.dirty = True

    def save(self) -> None:
        if self.dirty:
            write_json(self.path, {"version": LEDGER_VERSION, "files": self.entries}, sort_keys=True)
            self.dirty = False


class Ledger:
    """Recorded ``{path: {sha256, mtime_ns}}`` of the files under ``roots`` (see the module doc)."""

    def __init__(self, path: str | os.PathLike, roots: Iterable[str | os.PathLike],
                 cache_path: str | os.PathLike = DIGEST_CACHE):
        self.path = Path(path)
        self.roots = tuple(str(r) for r in roots)
        self.cache_path = Path(cache_path)

    def entries(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise LedgerError(f"{self.path}: not JSON ({exc}); delete it to start a new ledger") from exc
        if not isinstance(data, dict) or data.get("version") != LEDGER_VERSION:
            raise LedgerError(f"{self.path}: expected version {LEDGER_VERSION}; delete it to start a new ledger")
        return data["entries"]

    def restore(self) -> list[str]:
        """Give each file whose content equals its recorded digest its recorded mtime back; returns
        the restored paths. Files whose mtime did not move are not hashed.

        A bundle edited in place (a file inside rewritten) keeps its directory mtime, so Snakemake
        would not see the edit; if its content differs from the record, its mtime is moved to its
        newest file's, as a new output's would be."""
        cache = DigestCache.load(self.cache_path)
        restored = []
        for path, entry in sorted(self.entries().items()):
            if not os.path.exists(path):
                continue
            moved = visible_mtime_ns(path) != entry["mtime_ns"]
            is_bundle = os.path.isdir(path)
            if not moved and not (is_bundle and cache.stale_files(path)):
                continue  # an unchanged mtime (of every file inside a bundle): unchanged content
            if cache.digest(path) == entry["sha256"]:
                if moved:
                    set_visible_mtime(path, entry["mtime_ns"])
                    if not is_bundle:
                        cache.rekey(path, entry["sha256"])
                    restored.append(path)
            elif is_bundle:
                newest = newest_file_mtime_ns(path)
                if newest > visible_mtime_ns(path):
                    set_visible_mtime(path, newest)  # make the in-place edit visible to Snakemake
        cache.save()
        return restored

    def record(self) -> int:
        """Record the digest and mtime of every file under the roots (the ledger is rewritten only
        if it changed); returns how many entries it holds."""
        cache = DigestCache.load(self.cache_path)
        entries = {path: {"sha256": cache.digest(path), "mtime_ns": visible_mtime_ns(path)}
                   for path in tracked_paths(self.roots)}
        cache.forget_missing()
        cache.save()
        data = {"version": LEDGER_VERSION, "entries": entries}
        text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"  # as write_json
        try:
            unchanged = self.path.read_text() == text
        except OSError:
            unchanged = False
        if not unchanged:
            write_json(self.path, data, sort_keys=True)
        return len(entries)
