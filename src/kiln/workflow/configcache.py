"""Snakemake's ``configfile:`` loader, remembered by the file's bytes.

Snakemake parses a config file with yte over PyYAML's pure-Python ``FullLoader``: ~60 ms of CPU for
kiln's config.yaml at every start, a no-op ``snakemake -n`` included (the largest single cost kiln
adds to Snakemake's own start). While the Snakefile's ``configfile:`` directive runs inside
:func:`cached_loader`, a file whose bytes were parsed before gets the recorded result back: the value
Snakemake's loader returned for the same bytes, under the same versions of Snakemake, yte and
PyYAML. Any other file goes to Snakemake's loader, and its result is remembered only when it is plain
JSON (dicts with string keys, lists, strings, finite numbers, booleans, null) that reads back as the
same value: YAML dates, sets, tuples, JSON-format files (Snakemake returns ordered dicts for those)
and yte templates (``__use_yte__``, whose result may change from run to run) are parsed every time.

The cache (``.kiln/cache/configfile.json``) is an optimisation: unreadable, it is rebuilt;
unwritable, every start parses. Settings given on the command line (``--config``,
``--configfile``) are merged by Snakemake after the load, as without the cache.
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
