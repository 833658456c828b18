"""Content-based rebuild triggers that survive ``git clone`` + ``dvc pull``.

Snakemake decides staleness by mtimes, plus params/code triggers kept in the local ``.snakemake``
metadata, which a fresh clone lacks: after a clone, ``dvc pull`` and an edit of a param, Snakemake
alone would plan nothing. kiln therefore turns each job's settings into an input file:

- a **stamp** ``.kiln/stamps/<model>/<job>.json`` (local, untracked) holds the canonical JSON of the
  settings that determine the job's outputs, and is an ``input:`` of the job;
- a **record** (a JSON output of the job itself, tracked with the results by DVC) stores the digest
  of the settings the outputs were built with.

:func:`sync` runs when the Snakefile is parsed. A stamp whose content is unchanged is left alone.
A changed stamp is rewritten (new mtime: the job and everything downstream are planned). A missing
stamp (fresh clone) whose settings digest equals the record's is *adopted*: written with an old mtime
so it never makes its job stale. Adoption touches nothing but the stamp: the pulled outputs get the
mtimes they had where they were built from the content ledger (:mod:`kiln.workflow.ledger`), which
also brings a stamp whose settings were edited and reverted back to its recorded mtime.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from kiln.config import canonical_json, settings_digest

STAMP_ROOT = Path(".kiln") / "stamps"
#: mtime given to adopted stamps: older than any artifact
ADOPTED_MTIME = 1_000_000_000.0


@dataclass(frozen=True)
class Stamp:
    model: str
    job: str               # e.g. "source", "export/unified"
    settings: Any
    record: Path           # the job's JSON output carrying ``settings_sha256``

    @property
    def path(self) -> Path:
        return STAMP_ROOT / self.model / f"{self.job}.json"

    @property
    def content(self) -> str:
        return canonical_json(self.settings) + "\n"

    @property
    def digest(self) -> str:
        return settings_digest(self.settings)


def recorded_digest(record: Path) -> str | None:
    try:
        return json.loads(record.read_text()).get("settings_sha256")
    except (OSError, ValueError, AttributeError):
        return None


def _write(path: Path, content: str, mtime: float | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(content)
    os.replace(tmp, path)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def sync(stamps: Iterable[Stamp]) -> dict[str, list[str]]:
    """Bring every stamp up to date; returns which stamps were ``changed``, ``created``, ``adopted``.
    Only stamp files are written."""
    report: dict[str, list[str]] = {"changed": [], "created": [], "adopted": []}
    for stamp in stamps:
        try:
            current = stamp.path.read_text()
        except FileNotFoundError:
            current = None
        if current == stamp.content:
            continue
        if current is None and recorded_digest(stamp.record) == stamp.digest:
            _write(stamp.path, stamp.content, mtime=ADOPTED_MTIME)
            report["adopted"].append(str(stamp.path))
        else:
            _write(stamp.path, stamp.content)
            report["changed" if current is not None else "created"].append(str(stamp.path))
    return report


def remove_directory_markers(results_dir: str | Path) -> int:
    """Delete Snakemake's ``.snakemake_timestamp`` markers inside ``.mlpackage``/``.mlmodelc``
    bundles under ``results_dir``. The bundle directory takes the marker's mtime, which is what
    Snakemake compared, so the DAG's view of what is up to date does not change."""
    removed = 0
    for marker in Path(results_dir).glob("**/*.ml*/.snakemake_timestamp"):
        marker_ns = marker.stat().st_mtime_ns
        marker.unlink()
        os.utime(marker.parent, ns=(marker_ns, marker_ns))
        removed += 1
    return removed
