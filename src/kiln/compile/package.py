"""Reading an `.mlpackage`: its Manifest, the model specification and the weights directory, with
every inconsistency reported as a `PackageError` naming the file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from coremltools.proto import MIL_pb2, Model_pb2

from kiln.compile.errors import PackageError

MANIFEST = "Manifest.json"
DATA_DIR = "Data"
MODEL_PATH_PREFIX = "@model_path/"


@dataclass(frozen=True)
class Package:
    root: Path
    model_path: Path  # Data/com.apple.CoreML/model.mlmodel
    model_bytes: bytes
    model: Model_pb2.Model
    weights_dir: Path | None  # Data/com.apple.CoreML/weights, when the package has one


def _inside(root: Path, relative: str, manifest: Path) -> Path:
    """`relative` (a Manifest path, relative to Data/) resolved, refusing anything that leaves the
    package: absolute paths, ``..`` components, symlinks pointing outside."""
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts or not relative:
        raise PackageError(f"item path {relative!r} points outside the package", str(manifest))
    path = root / DATA_DIR / pure
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        raise PackageError(f"item path {relative!r} resolves outside the package", str(manifest)) from None
    return path


def read_package(package: str | Path) -> Package:
    root = Path(package)
    if not root.is_dir():
        raise PackageError("not a directory (an .mlpackage is a directory)", str(root))
    manifest_path = root / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PackageError("missing", str(manifest_path)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"not readable JSON: {exc}", str(manifest_path)) from None
    if not isinstance(manifest, dict):
        raise PackageError("top level is not a JSON object", str(manifest_path))
    entries = manifest.get("itemInfoEntries")
    root_id = manifest.get("rootModelIdentifier")
    if not isinstance(entries, dict) or not entries:
        raise PackageError("has no 'itemInfoEntries'", str(manifest_path))
    if not isinstance(root_id, str):
        raise PackageError("has no 'rootModelIdentifier'", str(manifest_path))
    if root_id not in entries:
        raise PackageError(f"rootModelIdentifier {root_id!r} names no item in itemInfoEntries", str(manifest_path))
    items = {}
    for identifier, entry in entries.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise PackageError(f"item {identifier!r} has no 'path'", str(manifest_path))
        items[identifier] = _inside(root, entry["path"], manifest_path)

    model_path = items[root_id]
    if not model_path.is_file():
        raise PackageError(f"root model item {entries[root_id]['path']!r} is missing", str(model_path))
    model_bytes = model_path.read_bytes()
    model = Model_pb2.Model()
    try:
        model.ParseFromString(model_bytes)
    except Exception as exc:  # DecodeError's class differs between protobuf implementations
        raise PackageError(f"not a Core ML model specification: {exc}", str(model_path)) from None
    kind = model.WhichOneof("Type")
    if kind != "mlProgram":
        raise PackageError(
            f"model type is {kind or 'unset'!r}, not 'mlProgram': only ML Programs compile to model.mil",
            str(model_path),
        )

    weights_dir = None
    for identifier, path in items.items():
        if identifier == root_id:
            continue
        if not path.exists():
            raise PackageError(f"item {entries[identifier].get('name', identifier)!r} is missing", str(path))
        if path.is_dir() and path.name == "weights" and path.parent == model_path.parent:
            weights_dir = path
    return Package(root=root, model_path=model_path, model_bytes=model_bytes, model=model, weights_dir=weights_dir)


def _blob_values(value: MIL_pb2.Value):
    if value.WhichOneof("value") == "blobFileValue":
        yield value.blobFileValue
    elif value.WhichOneof("value") == "immediateValue":
        immediate = value.immediateValue
        kind = immediate.WhichOneof("value")
        if kind in ("list", "tuple"):
            for item in getattr(immediate, kind).values:
                yield from _blob_values(item)
        elif kind == "dictionary":
            for pair in immediate.dictionary.values:
                yield from _blob_values(pair.key)
                yield from _blob_values(pair.value)


def _blocks_blobs(block: MIL_pb2.Block, where: str):
    for op in block.operations:
        label = op.outputs[0].name if op.outputs else op.type
        for value in op.attributes.values():
            for blob in _blob_values(value):
                yield blob, f"{where}, operation '{label}'"
        for argument in op.inputs.values():
            for binding in argument.arguments:
                if binding.WhichOneof("binding") == "value":
                    for blob in _blob_values(binding.value):
                        yield blob, f"{where}, operation '{label}'"
        for nested in op.blocks:
            yield from _blocks_blobs(nested, where)


def check_blob_references(package: Package) -> list[str]:
    """Every blob file a program references must exist under the package's weights directory.
    Returns the referenced files relative to the model directory (e.g. ``weights/weight.bin``)."""
    referenced: set[str] = set()
    model_dir = package.model_path.parent
    for name, function in package.model.mlProgram.functions.items():
        for opset, block in function.block_specializations.items():
            for blob, where in _blocks_blobs(block, f"function '{name}' ({opset})"):
                file_name = blob.fileName
                if not file_name.startswith(MODEL_PATH_PREFIX):
                    raise PackageError(f"{where}: blob path {file_name!r} does not start with {MODEL_PATH_PREFIX!r}",
                                       str(package.model_path))
                relative = file_name[len(MODEL_PATH_PREFIX):]
                pure = PurePosixPath(relative)
                if pure.is_absolute() or ".." in pure.parts:
                    raise PackageError(f"{where}: blob path {file_name!r} points outside the package",
                                       str(package.model_path))
                target = model_dir / pure
                if not target.is_file():
                    raise PackageError(f"{where}: blob file {file_name!r} does not exist", str(target))
                referenced.add(pure.as_posix())
    return sorted(referenced)
