"""Strict YAML reading: a mapping that names a key twice is an error, not "the last one wins".

PyYAML's ``safe_load`` silently keeps the last of two equal keys, so a model configured twice in
``config.yaml`` loses its first block without a word, and a checker reading a ``.nemo`` config could
see another document than OmegaConf (which refuses duplicates) loads. Everything else is
``yaml.SafeLoader``: no Python tags, anchors and merge keys resolved.
"""

from __future__ import annotations

import yaml


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping names the same key twice. ``key`` and ``line`` (1-based) say where."""

    def __init__(self, key, first_line: int, mark):
        self.key = key
        self.line = mark.line + 1
        self.first_line = first_line
        super().__init__(None, None, f"duplicate key {key!r} (line {self.line}; first given on line "
                                     f"{first_line})", mark)


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate mapping keys."""

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


def load(text: str):
    """Parse one YAML document strictly (see :class:`UniqueKeyLoader`)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
