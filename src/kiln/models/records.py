"""Public records of the real checkpoints' configurations (``records/<name>.yaml``), and the
full-size stand-ins built from them.

Each record holds ``model`` (the Hub id), ``sources`` (the public material cited, and what it
shows), ``record`` (the configuration as that material shows it, in the checkpoint's own keys) and
``standin``: ``verified`` maps each key of the family's architecture to the record path it is taken
from, ``assumed`` names the keys no public record shows, each with the reason for kiln's value. A
family's ``full`` architecture is :func:`standin` of its record, so every verified key *is* the
real value (``tests/models/test_records.py`` compares them with the NeMo config or config.json the
stand-in is built with).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from kiln.foundation.errors import ModelError

RECORDS_DIR = Path(__file__).with_name("records")


@dataclass(frozen=True)
class Record:
    name: str
    model: str
    sources: tuple[dict, ...]
    record: Mapping[str, Any]
    verified: Mapping[str, str]     # architecture key -> record path ("encoder.d_model")
    assumed: Mapping[str, str]      # architecture key -> why kiln's value

    @property
    def path(self) -> Path:
        return RECORDS_DIR / f"{self.name}.yaml"

    def value(self, path: str) -> Any:
        """The record's value at a dotted ``path``."""
        node: Any = self.record
        for part in path.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise ModelError(f"{self.path}: no '{path}' in the record")
            node = node[part]
        return copy.deepcopy(node)


@lru_cache(maxsize=None)
def load(name: str) -> Record:
    import yaml

    path = RECORDS_DIR / f"{name}.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model record ({exc.strerror})") from None
    standin = data.get("standin") or {}
    return Record(name=name, model=data["model"], sources=tuple(data["sources"]), record=data["record"],
                  verified=dict(standin.get("verified") or {}), assumed=dict(standin.get("assumed") or {}))


def standin(name: str, assumed_values: Mapping[str, Any]) -> dict:
    """The full-size architecture: every verified key from the record, every assumed key from
    ``assumed_values`` (which must name exactly the record's assumed keys)."""
    rec = load(name)
    if set(assumed_values) != set(rec.assumed):
        raise ModelError(f"{rec.path}: assumed keys {sorted(rec.assumed)} but kiln sets {sorted(assumed_values)}")
    arch = {key: rec.value(path) for key, path in rec.verified.items()}
    overlap = sorted(set(arch) & set(assumed_values))
    if overlap:
        raise ModelError(f"{rec.path}: {overlap} both verified and assumed")
    arch.update(copy.deepcopy(dict(assumed_values)))
    return arch
