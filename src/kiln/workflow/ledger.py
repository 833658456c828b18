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
covers every file inside (as :func:`kiln.foundation.fsutil.sha256_tree`), their mtime is the marker's or the
directory's, and a restore sets both.

Digests come from :mod:`kiln.integrity.digests` (one cache, shared with ``kiln check``), so start-up
hashes only files whose stamp moved.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Iterable

from kiln.integrity.digests import MARKER, DigestCache, bundle_files
from kiln.foundation.errors import KilnError
from kiln.foundation.fsutil import write_json

LEDGER_VERSION = 1
#: directory outputs: Snakemake sees one mtime for the whole bundle
BUNDLE_SUFFIXES = (".mlpackage", ".mlmodelc")


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
    return _visible_mtime_ns(path, os.stat(path))


def _visible_mtime_ns(path: str, info: os.stat_result) -> int:
    if stat.S_ISDIR(info.st_mode):
        try:
            return os.stat(os.path.join(path, MARKER)).st_mtime_ns
        except FileNotFoundError:
            pass
    return info.st_mtime_ns


def set_visible_mtime(path: str, mtime_ns: int) -> None:
    if os.path.isdir(path):
        marker = os.path.join(path, MARKER)
        if os.path.exists(marker):
            os.utime(marker, ns=(mtime_ns, mtime_ns))
    os.utime(path, ns=(mtime_ns, mtime_ns))


def newest_file_mtime_ns(bundle: str) -> int:
    return max((os.stat(f).st_mtime_ns for f in bundle_files(bundle)), default=0)


class Ledger:
    """Recorded ``{path: {sha256, mtime_ns}}`` of the files under ``roots`` (see the module doc)."""

    def __init__(self, path: str | os.PathLike, roots: Iterable[str | os.PathLike],
                 cache_path: str | os.PathLike | None = None):
        self.path = Path(path)
        self.roots = tuple(str(r) for r in roots)
        self.cache_path = cache_path

    def _cache(self) -> DigestCache:
        return DigestCache(self.cache_path) if self.cache_path is not None else DigestCache.default()

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
        cache = self._cache()
        restored = []
        for path, entry in sorted(self.entries().items()):
            try:   # one stat per path (every start visits every entry)
                info = os.stat(path)
            except (OSError, ValueError):
                continue   # gone (as os.path.exists)
            is_bundle = stat.S_ISDIR(info.st_mode)
            moved = _visible_mtime_ns(path, info) != entry["mtime_ns"]
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
        cache = self._cache()
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
