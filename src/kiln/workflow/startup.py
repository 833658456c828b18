"""What the Snakefile's start computes, remembered by content and skipped while it is unchanged (a
no-op ``snakemake -n`` on a built tree should cost little more than Snakemake's own start).

**The config file.** Snakemake parses a config file with yte over PyYAML's pure-Python
``FullLoader``: ~60 ms of CPU for kiln's config.yaml at every start. While the Snakefile's
``configfile:`` directive runs inside :func:`cached_loader`, a file whose bytes were parsed before
gets the recorded result back: the value Snakemake's loader returned for the same bytes, under the
same versions of Snakemake, yte and PyYAML. Any other file goes to Snakemake's loader, and its result
is remembered only when it is plain JSON (dicts with string keys, lists, strings, finite numbers,
booleans, null) that reads back as the same value: YAML dates, sets, tuples, JSON-format files
(Snakemake returns ordered dicts for those) and yte templates (``__use_yte__``, whose result may
change from run to run) are parsed every time. Settings given on the command line (``--config``,
``--configfile``) are merged by Snakemake after the load, as without the cache.

**The settings stamps.** :func:`sync_stamps` is :func:`kiln.workflow.stamps.sync` of
:func:`kiln.workflow.plan.stamps`, skipped while nothing it reads changed: the parsed config, the
kiln package that derives settings from it (the imported one), the consumer contracts, the files
whose content a stamp holds (recorded ``.npz`` feeds) and the stamp
files (every file's path, size, mtime and ctime; code stamps are :mod:`kiln.workflow.codedeps`'s). A stamp edited,
deleted or added by hand, a config edit or a code edit runs the sync again.

The caches (``.kiln/cache/``) are optimisations: unreadable, they are rebuilt; unwritable, every
start computes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from kiln.foundation.errors import KilnError
from kiln.foundation.fsutil import write_json

#: parsed config files (see the module doc)
CACHE_PATH = Path(".kiln") / "cache" / "configfile.json"
CACHE_VERSION = 1
#: parsed files kept (a checkout switches between a few configs at most)
KEPT = 4


def _loader_id() -> bytes:
    """What else decides the parse: the versions of Snakemake and PyYAML, and yte's module file
    (yte has no version attribute; reading its package metadata costs more than the lookup saves)."""
    import snakemake
    import yaml
    import yte

    info = os.stat(yte.__file__)
    return f"{snakemake.__version__}\0{yaml.__version__}\0{info.st_size}:{info.st_mtime_ns}".encode()


def _plain(value: Any) -> bool:
    """Whether ``value`` reads back from JSON as itself (types included)."""
    kind = type(value)
    if kind is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if kind is list:
        return all(_plain(v) for v in value)
    if kind is float:
        return math.isfinite(value)
    return kind in (str, int, bool) or value is None


def _entries(cache: Path) -> dict[str, Any]:
    try:
        data = json.loads(cache.read_text())
        if data.get("version") == CACHE_VERSION and isinstance(data.get("entries"), dict):
            return data["entries"]
    except (OSError, ValueError, AttributeError):
        pass   # no cache yet, or damaged: parse again
    return {}


def cached(load: Callable[[Any], Any], cache: Path = CACHE_PATH) -> Callable[[Any], Any]:
    """``load`` (Snakemake's ``load_configfile(path)``) remembered in ``cache`` by the bytes of
    ``path`` (see the module doc)."""

    def load_cached(path):
        try:
            data = Path(path).read_bytes()
        except (OSError, TypeError):
            return load(path)   # Snakemake's loader reports a missing file its own way
        key = hashlib.sha256(_loader_id() + b"\0" + data).hexdigest()
        entries = _entries(cache)
        if key in entries:
            return entries[key]
        value = load(path)
        if b"__use_yte__" not in data and _plain(value):
            entries.pop(key, None)
            entries[key] = value
            try:
                write_json(cache, {"version": CACHE_VERSION, "entries": dict(list(entries.items())[-KEPT:])})
            except (KilnError, OSError):
                pass   # a read-only checkout: parse at every start
        return value

    return load_cached


@contextlib.contextmanager
def cached_loader(cache: Path = CACHE_PATH) -> Iterator[None]:
    """Within the block, Snakemake's ``configfile:`` directive loads through :func:`cached`
    (``Workflow.configfile`` imports ``load_configfile`` from its module at every call)."""
    from snakemake.common import configfile as module

    original = module.load_configfile
    module.load_configfile = cached(original, cache)
    try:
        yield
    finally:
        module.load_configfile = original


#: the key of the last settings-stamp sync (see the module doc)
STAMPS_CACHE_PATH = Path(".kiln") / "cache" / "settings_stamps.json"
NOTHING_SYNCED = {"changed": [], "created": [], "adopted": []}


def _listing(root: str | os.PathLike, suffix: str, skip: str | os.PathLike | None = None) -> list[tuple]:
    """``(path, size, mtime_ns, ctime_ns)`` of every file under ``root`` whose name ends with
    ``suffix`` (not below ``skip``), sorted. The ctime moves with any write, even one that restores
    size and mtime."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if skip is None or os.path.join(dirpath, d) != os.fspath(skip))
        for name in sorted(filenames):
            if name.endswith(suffix):
                path = os.path.join(dirpath, name)
                info = os.stat(path)
                out.append((path, info.st_size, info.st_mtime_ns, info.st_ctime_ns))
    return out


def _stamps_key(config, package: str | os.PathLike) -> str:
    from kiln.config import canonical_json, settings_files
    from kiln.distribution.contracts import CONTRACT_DIR
    from kiln.workflow.codedeps import CODE_STAMP_ROOT
    from kiln.workflow.stamps import STAMP_ROOT

    return hashlib.sha256(json.dumps([
        CACHE_VERSION, config.path, config.results_dir, canonical_json(config.raw),
        _listing(package, ".py"), _listing(STAMP_ROOT, ".json", skip=CODE_STAMP_ROOT),
        _listing(CONTRACT_DIR, ""),   # consumer contracts: read by the planning code (none of the stamps yet)
        [_stat(path) for path in settings_files(config)],   # recorded feeds: stamps hold their sha256
    ]).encode()).hexdigest()


def _stat(path: Path) -> tuple:
    try:
        info = os.stat(path)
    except OSError:
        return (str(path), None)
    return (str(path), info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def sync_stamps(config, cache: Path = STAMPS_CACHE_PATH, package: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """Bring the settings stamps of ``config`` up to date (:func:`kiln.workflow.stamps.sync`), unless
    nothing it reads changed since the last sync (see the module doc). Returns the sync's report.
    ``package``: the kiln source folder in the key (default: the imported package's)."""
    import kiln
    from kiln.workflow import plan, stamps

    package = kiln.__path__[0] if package is None else package
    try:
        if json.loads(cache.read_text()).get("key") == _stamps_key(config, package):
            return {kind: [] for kind in NOTHING_SYNCED}
    except (OSError, ValueError, AttributeError):
        pass   # no cache yet, or damaged: sync
    report = stamps.sync(plan.stamps(config))
    try:
        write_json(cache, {"key": _stamps_key(config, package)})   # with the stamps as the sync left them
    except (KilnError, OSError):
        pass
    return report
