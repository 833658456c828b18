"""`kiln compile` never destroys or leaks files: it refuses outputs it did not write, never follows a
symlink out of the package, copies only the weight files the program references after validating
their records, and leaves no temporary behind on any error path."""

from __future__ import annotations

import os
import shutil
import struct

import pytest

from kiln.cli import main
from kiln.compile import compile_package
from kiln.coreml.errors import BlobFormatError, PackageError
from kiln.foundation.errors import KilnError, OutputError
from kiln.mil import load_model

WEIGHTS = "Data/com.apple.CoreML/weights"


def snapshot(root):
    """Every path below ``root`` with its bytes (files) or None (directories and links)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            out[rel] = None if os.path.isdir(path) or os.path.islink(path) else open(path, "rb").read()
    return out


@pytest.fixture
def workspace(value_kinds_package, tmp_path):
    package = tmp_path / "kinds.mlpackage"
    shutil.copytree(value_kinds_package, package)
    return tmp_path, package


def _refused(capsys, argv, *names):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("kiln: error: ") and "Traceback" not in err
    for name in names:
        assert name in err, err
    return err


def test_an_existing_file_is_not_replaced(workspace, capsys):
    root, package = workspace
    notes = root / "notes.txt"
    notes.write_text("my notes")
    before = snapshot(root)
    _refused(capsys, ["compile", str(package), "-o", str(notes)], "refusing to replace", str(notes))
    assert snapshot(root) == before


def test_a_directory_tree_is_not_replaced(workspace, capsys):
    root, package = workspace
    project = root / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print('hi')")
    before = snapshot(root)
    _refused(capsys, ["compile", str(package), "-o", str(project)], "not an .mlmodelc bundle kiln wrote")
    assert snapshot(root) == before


@pytest.mark.parametrize("where", ["equal", "inside"])
def test_output_equal_to_or_inside_the_input_is_refused(workspace, capsys, where):
    root, package = workspace
    output = package if where == "equal" else package / "Data" / "out.mlmodelc"
    before = snapshot(root)
    _refused(capsys, ["compile", str(package), "-o", str(output)], "the input", str(package))
    assert snapshot(root) == before


def test_dot_output_is_refused_and_leaves_no_temporary(workspace, capsys, monkeypatch):
    root, package = workspace
    monkeypatch.chdir(root)
    before = snapshot(root)
    _refused(capsys, ["compile", package.name, "-o", "."], "contains the input")
    assert snapshot(root) == before
    assert not [p for p in root.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_bundle_kiln_wrote_is_replaced(workspace):
    root, package = workspace
    out = root / "kinds.mlmodelc"
    compile_package(package, out)
    first = snapshot(out)
    compile_package(package, out)
    assert snapshot(out) == first
    assert sorted(p.name for p in root.iterdir()) == ["kinds.mlmodelc", "kinds.mlpackage"]


def test_symlinked_weight_file_is_refused_by_compiler_and_executor(workspace, capsys):
    root, package = workspace
    host_secret = root / "secret.txt"
    host_secret.write_text("root:$6$hash")
    weight = package / WEIGHTS / "weight.bin"
    weight.unlink()
    weight.symlink_to(host_secret)
    before = snapshot(root)
    _refused(capsys, ["compile", str(package), "-o", str(root / "out.mlmodelc")], "weight.bin", "symlink")
    assert snapshot(root) == before
    with pytest.raises(KilnError, match="symlink"):
        load_model(package).plan()


def test_a_symlinked_weights_directory_chain_is_refused(workspace):
    root, package = workspace
    elsewhere = root / "elsewhere"
    shutil.move(package / WEIGHTS, elsewhere)
    (root / "hop").symlink_to(elsewhere)
    (package / WEIGHTS).symlink_to(root / "hop")  # two-level chain out of the package
    with pytest.raises(PackageError, match="symlink"):
        compile_package(package, root / "out.mlmodelc")
    assert not (root / "out.mlmodelc").exists()


def test_only_referenced_weight_files_are_copied(workspace):
    root, package = workspace
    host_secret = root / "secret.txt"
    host_secret.write_text("root:$6$hash")
    (package / WEIGHTS / "shadow").symlink_to(host_secret)
    (package / WEIGHTS / "notes.bin").write_bytes(b"unreferenced")
    out = compile_package(package, root / "out.mlmodelc")
    assert sorted(p.relative_to(out).as_posix() for p in (out / "weights").iterdir()) == ["weights/weight.bin"]
    assert (out / "weights/weight.bin").read_bytes() == (package / WEIGHTS / "weight.bin").read_bytes()


def _blob_offset(package):
    from kiln.coreml.manifest import read_package
    from kiln.coreml.ops import blob_references

    source = read_package(package)
    return next(iter(blob_references(source.model.mlProgram))).offset


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda data, at: b"", "shorter than the 64-byte header"),
        (lambda data, at: data[: at + 80], "runs past the end"),
        (lambda data, at: data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:], "sentinel"),
        (lambda data, at: data[: at + 16] + struct.pack("<Q", at + 64 + 64) + data[at + 24:], "data offset"),
        (lambda data, at: data[: at + 4] + struct.pack("<I", 1) + data[at + 8:], "declares fp32.* holds fp16"),
    ],
    ids=["empty", "truncated", "sentinel-bit-flip", "data-offset", "dtype-code"],
)
def test_corrupt_weights_are_refused_naming_file_and_offset(workspace, damage, message):
    root, package = workspace
    weight = package / WEIGHTS / "weight.bin"
    offset = _blob_offset(package)
    weight.write_bytes(damage(weight.read_bytes(), offset))
    before = snapshot(root)
    with pytest.raises(BlobFormatError, match=message) as caught:
        compile_package(package, root / "out.mlmodelc")
    assert str(weight) in str(caught.value)
    if message != "shorter than the 64-byte header":
        assert f"offset {offset}" in str(caught.value)
    assert snapshot(root) == before


def test_unwritable_output_directory_is_a_clean_error(workspace, capsys):
    root, package = workspace
    blocker = root / "file"
    blocker.write_text("x")
    _refused(capsys, ["compile", str(package), "-o", str(blocker / "out.mlmodelc")], "cannot write")
    with pytest.raises(OutputError):
        compile_package(package, "/proc/kiln-test.mlmodelc")
