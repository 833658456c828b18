"""Reading JSON records within bounds: a file a user hands kiln (a published ``kiln/provenance.json``,
a job record after a copy or a pull) may be anything.

``json.loads`` parses nesting with recursion: 100,000 nested brackets end in a ``RecursionError``;
a few hundred pass the parser and then break whatever walks the record recursively (the comparison
of figures, the search for recorded digests). :func:`read` caps the size, requires UTF-8, caps the
nesting depth and turns every failure into a :class:`JsonFileError` naming the file, which callers
re-raise as their own typed error.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from kiln.foundation.errors import KilnError

#: nesting depth of a record (kiln's records nest 6 deep at most; readers walk them recursively)
MAX_DEPTH = 64
#: size of a record (the largest, a quantization summary, is a few hundred KB)
MAX_BYTES = 64 << 20


class JsonFileError(KilnError):
    """A JSON file cannot be read within bounds. ``reason`` is the one-line cause (no file name)."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            node = node.values()
        elif not isinstance(node, list):
            continue
        level += 1
        deepest = max(deepest, level)
        stack.extend((child, level) for child in node if isinstance(child, (dict, list)))
    return deepest


def loads(path: str | os.PathLike, text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """``text`` (the content of ``path``) parsed within bounds; failures a :class:`JsonFileError`."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonFileError(path, f"not UTF-8 text (byte 0x{text[exc.start]:02x} at offset {exc.start})") from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise JsonFileError(path, f"nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise JsonFileError(path, f"not valid JSON: {exc}") from None
    if depth(value) > max_depth:
        raise JsonFileError(path, f"nested deeper than {max_depth} levels")
    return value


def read(path: str | os.PathLike, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value in the regular file ``path``, read within bounds; every failure (missing,
    unreadable, too large, not UTF-8, not JSON, too deep) a :class:`JsonFileError` naming it."""
    path = Path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise JsonFileError(path, "is a directory, not a JSON file" if stat.S_ISDIR(info.st_mode)
                                else "not a regular file")
        if info.st_size > max_bytes:
            raise JsonFileError(path, f"{info.st_size:,} bytes; kiln reads JSON records of at most {max_bytes:,}")
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise JsonFileError(path, "file not found") from None
    except OSError as exc:
        raise JsonFileError(path, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise JsonFileError(path, f"more than {max_bytes:,} bytes; kiln reads JSON records of at most {max_bytes:,}")
    return loads(path, data, max_depth)
