"""File-by-file comparison of two `.mlmodelc` bundles (kiln's against Apple's, on macOS).

Bytes must match everywhere except where Apple itself is not deterministic: the order of the
`userDefined` metadata map inside `coremldata.bin` (compared after putting one side in the other's
order), and `metadata.json` (compared as parsed JSON, since its key order is hash order)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kiln.coreml.coremldata import build_coremldata, parse_coremldata
from kiln.coreml.errors import CoremlDataError


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _first_difference(a: bytes, b: bytes) -> str:
    for index, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first differs at byte {index} (0x{index:x})"
    return f"sizes differ ({len(a)} vs {len(b)} bytes)"


def _compare_coremldata(a: bytes, b: bytes) -> str | None:
    try:
        spec_a, desc_a, order_a = parse_coremldata(a, "a/coremldata.bin")
        spec_b, desc_b, order_b = parse_coremldata(b, "b/coremldata.bin")
    except CoremlDataError as exc:
        return str(exc)
    if spec_a != spec_b:
        return f"specificationVersion {spec_a} vs {spec_b}"
    if desc_a != desc_b:
        return "ModelDescription differs field by field"
    # Same content: re-serialize a's description in b's userDefined order and compare bytes.
    try:
        reordered = build_coremldata(spec_a, desc_a, order_b)
    except ValueError:
        return "userDefined keys differ"
    if reordered != b:
        return "bytes differ after matching userDefined order: " + _first_difference(reordered, b)
    own_order = build_coremldata(spec_a, desc_a, order_a)
    if a != own_order:
        return "layout differs from the canonical writer: " + _first_difference(a, own_order)
    return None


def compare_bundles(a: str | Path, b: str | Path) -> list[str]:
    """Differences between bundles `a` and `b`, one message per file; empty when they agree."""
    a, b = Path(a), Path(b)
    problems = []
    for root in (a, b):
        if not root.is_dir():
            return [f"{root}: not a directory"]
    files_a, files_b = _files(a), _files(b)
    for name in sorted(files_a - files_b):
        problems.append(f"{name}: only in {a}")
    for name in sorted(files_b - files_a):
        problems.append(f"{name}: only in {b}")
    for name in sorted(files_a & files_b):
        data_a, data_b = (a / name).read_bytes(), (b / name).read_bytes()
        if data_a == data_b:
            continue
        if name == "coremldata.bin":
            problem = _compare_coremldata(data_a, data_b)
            if problem:
                problems.append(f"{name}: {problem}")
        elif name == "metadata.json":
            try:
                if json.loads(data_a) != json.loads(data_b):
                    problems.append(f"{name}: parsed JSON differs")
            except json.JSONDecodeError as exc:
                problems.append(f"{name}: not JSON ({exc})")
        else:
            problems.append(f"{name}: {_first_difference(data_a, data_b)}")
    return problems


def compare_bundle_to_package(package: str | Path, bundle: str | Path, parsed=None, digests=None) -> list[str]:
    """The compile round trip checked structurally: the bundle's ``model.mil`` parses back to the
    package's program (:func:`program_differences`) and every weight file the program references is
    byte-identical in the bundle (:func:`weight_differences`). Differences, one message each; empty
    when the bundle is the package's program. ``parsed``: the bundle's program if already parsed
    (e.g. by ``kiln.mil.load_model``), so the text is not parsed twice. ``digests``: a
    :class:`kiln.integrity.digests.DigestCache` to take known digests from and keep the new ones in (a package
    the ledger has hashed is not hashed again; the bundle's digests serve its tree digest)."""
    from kiln.coreml.manifest import read_package

    source = read_package(package)
    return program_differences(source, bundle, parsed) + weight_differences(weight_files(source, bundle), digests)


def program_differences(source, bundle: str | Path, parsed=None) -> list[str]:
    """``source`` (a :func:`kiln.coreml.manifest.read_package` result) against the bundle's
    ``model.mil``: the text parses back to the package's program, function inputs in the printed,
    sorted order, the compiler's own ``coremlc-*`` buildInfo entries on top of the package's."""
    from kiln.coreml.proto import MIL_pb2

    from kiln.coreml.mil_text.build_info import build_info_entries
    from kiln.coreml.mil_text.parser import parse_program

    bundle = Path(bundle)
    mil_file = bundle / "model.mil"
    if parsed is None:
        try:
            parsed = parse_program(mil_file.read_text(encoding="utf-8"), file=str(mil_file))
        except (OSError, UnicodeDecodeError) as exc:
            return [f"model.mil: unreadable ({exc})"]
    else:
        copy = MIL_pb2.Program()
        copy.CopyFrom(parsed)
        parsed = copy
    expected = MIL_pb2.Program()
    expected.CopyFrom(source.model.mlProgram)
    for function in expected.functions.values():  # printed sorted by name, as coremlc does
        ordered = sorted(function.inputs, key=lambda value: value.name)
        del function.inputs[:]
        function.inputs.extend(ordered)
    problems = []
    ours = build_info_entries(parsed.attributes.get("buildInfo"))
    theirs = build_info_entries(expected.attributes.get("buildInfo"))
    for key, value in sorted(theirs.items()):
        if ours.get(key) != value and not key.startswith("coremlc-"):
            problems.append(f"model.mil: buildInfo entry {key!r} is {ours.get(key)!r}, the package has {value!r}")
    for program in (parsed, expected):
        if "buildInfo" in program.attributes:
            del program.attributes["buildInfo"]
    if parsed != expected:
        problems.append(f"model.mil: does not parse back to the program of {source.root}")
    return problems


def weight_files(source, bundle: str | Path) -> list[tuple[str, Path, Path]]:
    """(relative path, bundle file, package file) for every weight file the program references."""
    from kiln.coreml.manifest import check_blob_references

    referenced = check_blob_references(source.model_dir, source.model.mlProgram, source.model_path)
    return [(relative, Path(bundle) / relative, source.model_dir / relative) for relative in sorted(referenced)]


def weight_differences(files: list[tuple[str, Path, Path]], digests=None) -> list[str]:
    """Every weight file the package's program references (``files``, from :func:`weight_files`) is
    in the bundle with the same sha256."""
    from kiln.foundation.fsutil import sha256_file

    problems, pairs = [], []
    for relative, ours, theirs in files:
        if ours.is_file():
            pairs.append((relative, ours, theirs))
        else:
            problems.append(f"{relative}: missing from the bundle")
    # hashlib releases the GIL on large buffers: both sides hash at once
    digest_of = digests.file_digest if digests is not None else sha256_file
    with ThreadPoolExecutor(max_workers=2) as pool:
        found = list(pool.map(digest_of, [p for _, ours, theirs in pairs for p in (ours, theirs)]))
    for index, (relative, _, theirs) in enumerate(pairs):
        if found[2 * index] != found[2 * index + 1]:
            problems.append(f"{relative}: differs from {theirs} (sha256)")
    return problems
