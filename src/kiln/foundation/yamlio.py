"""Reading YAML strictly and within bounds: every YAML file kiln reads goes through :func:`read`
(``config.yaml``, ``contracts/*.yaml``, a published ``kiln/config.yaml``) or :func:`load` (the
``model_config.yaml`` inside a ``.nemo`` archive).

Strict: a mapping that names a key twice is an error, not "the last one wins". PyYAML's
``safe_load`` silently keeps the last of two equal keys, so a model configured twice in
``config.yaml`` loses its first block without a word, and a checker reading a ``.nemo`` config could
see another document than OmegaConf (which refuses duplicates) loads.

Bounded: PyYAML resolves an alias to the anchored node itself, so a 342-byte document of nine
anchors, each a list of nine aliases of the previous one ("billion laughs"), parses in microseconds
into 9^9 = 387 million list items that everything walking it afterwards (schema validation, a deep
copy, a digest) visits one by one: ``kiln check-config`` spun for minutes. Composing is recursive,
so 20,000 nested brackets end in a ``RecursionError``. :func:`load` therefore counts the nodes of the
document *with every alias expanded* while it composes (an alias adds the size of what it names,
computed once, so a bomb is refused after reading its first lines) and caps that count, the nesting
depth and (in :func:`read`) the file's size; a non-UTF-8 file and an alias to the node it sits in (a
cycle) are refused too. Anchors, aliases and ``<<`` merge keys within the bounds stay allowed (the
Kokoro contract shares its input block between components that way).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from kiln.foundation.errors import KilnError

#: nesting depth of mappings and sequences (kiln's files nest 8 deep at most; every reader of the
#: result walks it recursively, so the cap keeps them far below Python's recursion limit)
MAX_DEPTH = 64
#: nodes of a document with every alias expanded: what a walk over the loaded data visits
#: (config.yaml has about 2,000)
MAX_NODES = 1_000_000
#: size of a YAML file (config.yaml is about 30 KB)
MAX_BYTES = 16 << 20


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping names the same key twice. ``key`` and ``line`` (1-based) say where."""

    def __init__(self, key, first_line: int, mark):
        self.key = key
        self.line = mark.line + 1
        self.first_line = first_line
        super().__init__(None, None, f"duplicate key {key!r} (line {self.line}; first given on line "
                                     f"{first_line})", mark)


class YamlLimitError(yaml.YAMLError):
    """A document is nested too deep, expands to too many nodes through its aliases, or has an
    alias to the node it is inside. The message says which and where (1-based line)."""


class YamlFileError(KilnError):
    """A YAML file cannot be read as a bounded, strict YAML document. ``reason`` is the one-line
    cause (no file name); ``key`` the duplicated key, if that is the cause. Callers re-raise it as
    their own typed error (``ConfigError``, ``ContractSchemaError``, ...)."""

    def __init__(self, path: str | os.PathLike, reason: str, key: Any = None):
        self.path = str(path)
        self.reason = reason
        self.key = key
        super().__init__(f"{path}: {reason}")


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate mapping keys and composes within bounds (see the
    module docstring)."""

    max_depth = MAX_DEPTH
    max_nodes = MAX_NODES

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._expanded = 0                  # nodes so far, aliases counted as what they expand to
        self._sizes: dict[int, int] = {}    # id(anchored node) -> its expanded size, once complete

    def _count(self, nodes: int, mark) -> None:
        self._expanded += nodes
        if self._expanded > self.max_nodes:
            raise YamlLimitError(f"line {mark.line + 1}: the document expands to more than {self.max_nodes:,} "
                                 f"nodes with its aliases resolved (an alias bomb?); kiln reads at most "
                                 f"{self.max_nodes:,}")

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:
                size = self._sizes.get(id(target))
                if size is None:
                    raise YamlLimitError(f"line {event.start_mark.line + 1}: alias *{event.anchor} refers to "
                                         f"the node it is inside (a cycle)")
                self._count(size, event.start_mark)
            return super().compose_node(parent, index)   # an undefined alias: PyYAML's ComposerError
        if self._depth >= self.max_depth:
            raise YamlLimitError(f"line {event.start_mark.line + 1}: nested deeper than {self.max_depth} "
                                 f"levels")
        before = self._expanded
        self._count(1, event.start_mark)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if getattr(event, "anchor", None) is not None:
            self._sizes[id(node)] = self._expanded - before
        return node

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges are not duplicates
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # unhashable key: SafeLoader reports it below
                continue
            if first is not None:
                raise DuplicateKeyError(key, first, key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load(text: str) -> Any:
    """Parse one YAML document strictly and within bounds (see :class:`UniqueKeyLoader`). Raises
    :class:`DuplicateKeyError`, :class:`YamlLimitError` or PyYAML's other ``yaml.YAMLError``s."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)


def read_text(path: str | os.PathLike, max_bytes: int = MAX_BYTES) -> str:
    """The UTF-8 text of the regular file ``path`` (at most ``max_bytes``); every failure a
    :class:`YamlFileError` naming the file."""
    path = Path(path)
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise YamlFileError(path, "is a directory, not a YAML file")
        if not stat.S_ISREG(info.st_mode):
            raise YamlFileError(path, "not a regular file")
        if info.st_size > max_bytes:
            raise YamlFileError(path, f"{info.st_size:,} bytes; kiln reads YAML files of at most {max_bytes:,}")
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise YamlFileError(path, "file not found") from None
    except OSError as exc:
        raise YamlFileError(path, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise YamlFileError(path, f"more than {max_bytes:,} bytes; kiln reads YAML files of at most {max_bytes:,}")
    return decode(path, data)


def decode(path: str | os.PathLike, data: bytes) -> str:
    """``data`` as UTF-8 text, or a :class:`YamlFileError` naming ``path`` and the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise YamlFileError(path, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}, "
                                  f"line {line})") from None


def parse(path: str | os.PathLike, text: str) -> Any:
    """``text`` (the content of ``path``) loaded by :func:`load`; every failure a
    :class:`YamlFileError` naming ``path``, in one line."""
    try:
        return load(text)
    except DuplicateKeyError as exc:
        raise YamlFileError(path, f"key {exc.key!r} is given twice (lines {exc.first_line} and {exc.line}); "
                                  f"the second would silently replace the first", key=exc.key) from None
    except YamlLimitError as exc:
        raise YamlFileError(path, str(exc)) from None
    except yaml.YAMLError as exc:
        raise YamlFileError(path, f"not valid YAML: {' '.join(str(exc).split())}") from None


def read(path: str | os.PathLike, max_bytes: int = MAX_BYTES) -> Any:
    """The YAML document in the file ``path``, read strictly and within bounds; every failure a
    :class:`YamlFileError` naming the file, in one line."""
    return parse(path, read_text(path, max_bytes))
