"""Deterministic, atomic ``.mlpackage`` writing.

``MLModel.save()`` is not reproducible: it writes fresh random UUIDs into ``Manifest.json``,
coremltools stamps ``com.github.apple.coremltools.conversion_date`` into the model's metadata, and the
spec's protobuf maps (``userDefined`` metadata, functions, attributes) are serialised in an order that
changes from process to process. kiln drops the date, derives the Manifest's item identifiers from the
item paths (UUIDv5, upper-case as Xcode writes them), re-serialises the spec deterministically (map
entries sorted by key), and writes the package to a temporary path that is renamed into place. The
package embeds no path and no time: same sources and toolchain give the same bytes in any process,
checkout and machine.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from kiln.foundation import failpoints
from kiln.coreml.manifest import read_manifest, write_manifest
from kiln.coreml.paths import is_mlpackage
from kiln.foundation.errors import ExportError
from kiln.foundation.fsutil import atomic_dir

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


def root_model_path(package: Path, manifest: dict) -> Path:
    """The spec file (``model.mlmodel``) a package's Manifest names as its root model."""
    item = manifest.get("itemInfoEntries", {}).get(manifest.get("rootModelIdentifier"))
    if not item or "path" not in item:
        raise ExportError(f"{package / 'Manifest.json'}: rootModelIdentifier names no item with a path")
    return package / "Data" / item["path"]


def canonicalise_spec(spec_path: Path) -> None:
    """Rewrite a serialised Core ML spec with protobuf's deterministic serialisation (map entries
    in key order), which the default serialiser does not promise across processes."""
    from kiln.coreml.proto import Model_pb2

    spec = Model_pb2.Model()
    try:
        spec.ParseFromString(spec_path.read_bytes())
    except Exception as exc:  # protobuf raises its own DecodeError
        raise ExportError(f"{spec_path}: not a Core ML model spec ({exc})") from exc
    spec_path.write_bytes(spec.SerializeToString(deterministic=True))


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
        manifest = deterministic_manifest(read_manifest(inner).raw)
        write_manifest(inner, manifest)
        canonicalise_spec(root_model_path(inner, manifest))
        for item in inner.iterdir():
            item.rename(staging / item.name)
        inner.rmdir()
    return path
