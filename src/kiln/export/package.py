"""Deterministic, atomic ``.mlpackage`` writing.

``MLModel.save()`` is not reproducible: it writes fresh random UUIDs into ``Manifest.json`` and
coremltools stamps ``com.github.apple.coremltools.conversion_date`` into the model's metadata. Two
identical conversions otherwise give byte-identical ``model.mlmodel`` and ``weight.bin``. kiln drops
the date, derives the Manifest's item identifiers from the item paths (UUIDv5, upper-case as Xcode
writes them), and writes the package to a temporary path that is renamed into place.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from kiln import failpoints
from kiln.coreml.manifest import read_manifest, write_manifest
from kiln.coreml.paths import is_mlpackage
from kiln.errors import ExportError
from kiln.fsutil import atomic_dir

#: namespace of kiln's deterministic Manifest identifiers
MANIFEST_NAMESPACE = uuid.UUID("6b696c6e-2d6d-6c70-6163-6b6167650000")
NONDETERMINISTIC_METADATA = ("com.github.apple.coremltools.conversion_date",)


def deterministic_manifest(manifest: dict) -> dict:
    """The same Manifest with every item identifier replaced by UUIDv5(item path)."""
    entries = manifest.get("itemInfoEntries", {})
    renamed = {}
    mapping = {}
    for old_id, item in entries.items():
        new_id = str(uuid.uuid5(MANIFEST_NAMESPACE, item["path"])).upper()
        mapping[old_id] = new_id
        renamed[new_id] = item
    out = dict(manifest)
    out["itemInfoEntries"] = {k: renamed[k] for k in sorted(renamed)}
    root = manifest.get("rootModelIdentifier")
    if root not in mapping:
        raise ExportError(f"Manifest.json root model identifier {root!r} names no item")
    out["rootModelIdentifier"] = mapping[root]
    return out


def save_mlpackage(mlmodel, path: str | Path) -> Path:
    """Save ``mlmodel`` (a ``coremltools.models.MLModel``) to ``path`` reproducibly and atomically."""
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise ExportError(f"{path}: an ML Program is saved as a directory ending in .mlpackage")
    metadata = mlmodel.user_defined_metadata
    for key in NONDETERMINISTIC_METADATA:
        if key in metadata:
            del metadata[key]
    with atomic_dir(path, replaceable=is_mlpackage, kind="an .mlpackage") as staging:
        # coremltools refuses to save into an existing directory; save inside the staging dir
        inner = staging / path.name
        mlmodel.save(str(inner))
        failpoints.hit("export.save")  # crash-safety tests stop here: a half-written package
        write_manifest(inner, deterministic_manifest(read_manifest(inner).raw))
        for item in inner.iterdir():
            item.rename(staging / item.name)
        inner.rmdir()
    return path
