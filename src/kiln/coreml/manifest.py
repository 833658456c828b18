"""An ``.mlpackage``: its ``Manifest.json`` (read, write, item resolution), the root model spec and
the blob files its program references, each checked once, here.

    X.mlpackage/Manifest.json                          itemInfoEntries keyed by id, rootModelIdentifier
    X.mlpackage/Data/com.apple.CoreML/model.mlmodel    protobuf CoreML.Specification.Model (mlProgram)
    X.mlpackage/Data/com.apple.CoreML/weights/weight.bin

Item paths are relative to ``Data/``; ``@model_path`` in a program is the root model's directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from kiln.coreml import paths
from kiln.coreml.errors import BlobFormatError, PackageError, UnsupportedModelError
from kiln.coreml.ops import MODEL_PATH_PREFIX, BlobReference, blob_references

MANIFEST = "Manifest.json"
DATA_DIR = "Data"
MAX_SPEC_BYTES = 2 << 30


@dataclass(frozen=True)
class Manifest:
    """The parsed ``Manifest.json``: item entries by identifier and the root model's identifier."""

    path: Path
    entries: dict[str, dict]
    root_id: str
    raw: dict = field(repr=False)

    def item_name(self, identifier: str) -> str:
        return str(self.entries[identifier].get("name", identifier))


def read_manifest(package: str | Path) -> Manifest:
    """Parse and check ``package/Manifest.json`` (every entry has a path, the root names an entry)."""
    manifest_path = Path(package) / MANIFEST
    if not manifest_path.exists() and not manifest_path.is_symlink():
        raise PackageError("missing", manifest_path)
    try:
        paths.regular_file(manifest_path, MANIFEST)
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"not readable JSON: {exc}", manifest_path) from None
    if not isinstance(raw, dict):
        raise PackageError("top level is not a JSON object", manifest_path)
    entries, root_id = raw.get("itemInfoEntries"), raw.get("rootModelIdentifier")
    if not isinstance(entries, dict) or not entries:
        raise PackageError("has no 'itemInfoEntries'", manifest_path)
    if not isinstance(root_id, str):
        raise PackageError("has no 'rootModelIdentifier'", manifest_path)
    if root_id not in entries:
        raise PackageError(f"rootModelIdentifier {root_id!r} names no item in itemInfoEntries", manifest_path)
    for identifier, entry in entries.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise PackageError(f"item {identifier!r} has no 'path'", manifest_path)
    return Manifest(manifest_path, entries, root_id, raw)


def write_manifest(package: str | Path, manifest: dict) -> None:
    """Write ``Manifest.json`` as coremltools does (4-space indent), plus a final newline."""
    (Path(package) / MANIFEST).write_text(json.dumps(manifest, indent=4) + "\n", encoding="utf-8")


def item_path(package: str | Path, manifest: Manifest, identifier: str) -> Path:
    """Where item ``identifier`` lives, refusing paths that leave the package or cross a symlink."""
    data = Path(package) / DATA_DIR
    if data.is_symlink():
        raise PackageError(f"{DATA_DIR} is a symlink; kiln never follows links inside a package", data)
    return paths.member(data, manifest.entries[identifier]["path"], what="item path", source=manifest.path)


@dataclass(frozen=True)
class Package:
    """A read ``.mlpackage``: its manifest, items and root model specification."""

    root: Path
    manifest: Manifest
    items: dict[str, Path]
    model_path: Path  # Data/com.apple.CoreML/model.mlmodel
    model_bytes: bytes
    model: object  # coremltools.proto.Model_pb2.Model (an ML Program)

    @property
    def model_dir(self) -> Path:
        """What ``@model_path`` in the program's blob references resolves to."""
        return self.model_path.parent


def parse_model_spec(model_path: Path, data: bytes):
    """A ``Model_pb2.Model`` from ``data``, which must hold an ML Program."""
    from kiln.coreml.proto import Model_pb2

    model = Model_pb2.Model()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # DecodeError's class differs between protobuf implementations
        raise PackageError(f"not a Core ML model specification (protobuf does not parse: {exc})",
                           model_path) from None
    kind = model.WhichOneof("Type")
    if kind != "mlProgram":
        raise UnsupportedModelError(
            f"model type is {kind or 'unset'!r}, not 'mlProgram': kiln reads ML Programs only", model_path)
    return model


def read_package(package: str | Path) -> Package:
    """Read ``package``: Manifest, every item present and inside the package, the root model spec."""
    root = Path(package)
    if not root.is_dir():
        raise PackageError("not a directory (an .mlpackage is a directory)", root)
    manifest = read_manifest(root)
    items = {identifier: item_path(root, manifest, identifier) for identifier in manifest.entries}
    model_path = items[manifest.root_id]
    if not model_path.exists():
        raise PackageError(f"root model item {manifest.entries[manifest.root_id]['path']!r} is missing", model_path)
    size = paths.regular_file(model_path, "root model item").st_size
    if size > MAX_SPEC_BYTES:
        raise PackageError(f"model spec of {size} bytes is implausibly large", model_path)
    model_bytes = model_path.read_bytes()
    model = parse_model_spec(model_path, model_bytes)
    for identifier, path in items.items():
        if not path.exists():
            raise PackageError(f"item {manifest.item_name(identifier)!r} is missing", path)
    return Package(root, manifest, items, model_path, model_bytes, model)


def blob_file(model_dir: Path, reference: BlobReference | str, source: object = None) -> Path:
    """The file a ``BLOBFILE`` path names below ``model_dir`` (``@model_path``), checked safe."""
    file_name = reference.file_name if isinstance(reference, BlobReference) else reference
    where = f"{reference.where}: " if isinstance(reference, BlobReference) else ""
    if not file_name.startswith(MODEL_PATH_PREFIX):
        raise PackageError(f"{where}blob path {file_name!r} does not start with {MODEL_PATH_PREFIX!r}", source)
    return paths.member(model_dir, file_name[len(MODEL_PATH_PREFIX):], what=f"{where}blob path", source=source)


def check_blob_references(model_dir: Path, program, source: object = None) -> dict[str, list[BlobReference]]:
    """Every blob reference of ``program`` resolved below ``model_dir``, each file a valid blob
    storage file, each reference a valid record whose dtype and element count match the type the
    program declares. Returns the references by file (relative to ``model_dir``)."""
    from kiln.coreml.blob import BlobFile
    from kiln.coreml.dtypes import BY_PROTO

    by_file: dict[str, list[BlobReference]] = {}
    for reference in blob_references(program):
        path = blob_file(model_dir, reference, source)
        if not path.exists():
            raise PackageError(f"{reference.where}: blob file {reference.file_name!r} does not exist", path)
        paths.regular_file(path, f"{reference.where}: blob file {reference.file_name!r}")
        by_file.setdefault(path.relative_to(model_dir).as_posix(), []).append(reference)
    for relative, references in sorted(by_file.items()):
        with BlobFile(model_dir / relative) as blob:
            records = blob.validate()
            for reference in references:
                record = records.get(reference.offset)
                if record is None:
                    raise BlobFormatError(f"{reference.where}: no blob record starts at this offset",
                                          blob.path, reference.offset)
                tensor = reference.value_type.tensorType
                declared = BY_PROTO.get(tensor.dataType)
                count = 1
                for dim in tensor.dimensions:
                    count *= dim.constant.size
                if declared is None or declared.name != record.dtype or count != record.count:
                    raise BlobFormatError(
                        f"{reference.where}: the program declares {declared.name if declared else tensor.dataType}"
                        f"[{count}] but the blob holds {record.dtype}[{record.count}]", blob.path, reference.offset)
    return by_file
