"""Path safety of the format layer: nothing leaves a package, no symlink below its root is followed,
and writers recognise only their own kind of output as replaceable."""

from __future__ import annotations

import pytest

from kiln.coreml.errors import PackageError
from kiln.coreml.manifest import read_manifest
from kiln.coreml.paths import files_below, is_mlmodelc, is_mlpackage, member


@pytest.fixture
def package(tmp_path):
    root = tmp_path / "x.mlpackage"
    (root / "Data" / "com.apple.CoreML" / "weights").mkdir(parents=True)
    (root / "Manifest.json").write_text('{"itemInfoEntries": {"A": {"path": "com.apple.CoreML/model.mlmodel"}}, '
                                        '"rootModelIdentifier": "A"}')
    (root / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(b"spec")
    (root / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").write_bytes(b"w")
    return root


@pytest.mark.parametrize("relative", ["", "/etc/passwd", "../x", "a/../../x", "a/\0b"])
def test_member_refuses_paths_that_leave(package, relative):
    with pytest.raises(PackageError, match="points outside the package"):
        member(package, relative, what="item path")


def test_member_refuses_any_symlink_component(package, tmp_path):
    (tmp_path / "outside").mkdir()
    (package / "Data" / "link").symlink_to(tmp_path / "outside")
    (package / "Data" / "inner").symlink_to(package / "Data" / "com.apple.CoreML")  # even one that stays inside
    for relative in ("link/file", "inner/model.mlmodel"):
        with pytest.raises(PackageError, match="passes through the symlink"):
            member(package / "Data", relative, what="item path")
    assert member(package / "Data", "com.apple.CoreML/model.mlmodel", what="item") == \
        package / "Data" / "com.apple.CoreML" / "model.mlmodel"


def test_a_symlinked_manifest_is_refused(package, tmp_path):
    real = tmp_path / "Manifest.json"
    (package / "Manifest.json").rename(real)
    (package / "Manifest.json").symlink_to(real)
    with pytest.raises(PackageError, match="Manifest.json is a symlink"):
        read_manifest(package)


def test_files_below_refuses_links_and_recognisers(package, tmp_path):
    assert sorted(p.name for p in files_below(package)) == ["Manifest.json", "model.mlmodel", "weight.bin"]
    assert is_mlpackage(package) and not is_mlmodelc(package)
    (package / ".snakemake_timestamp").write_text("")  # Snakemake's marker does not disqualify
    assert is_mlpackage(package)
    (package / "notes.txt").write_text("mine")
    assert not is_mlpackage(package)
    (package / "notes.txt").unlink()
    (package / "Data" / "evil").symlink_to(tmp_path)
    with pytest.raises(PackageError, match="symlink"):
        files_below(package)
    assert not is_mlpackage(package)

    bundle = tmp_path / "x.mlmodelc"
    (bundle / "weights").mkdir(parents=True)
    (bundle / "analytics").mkdir()
    for name in ("model.mil", "coremldata.bin", "metadata.json", "analytics/coremldata.bin", "weights/weight.bin"):
        (bundle / name).write_text("x")
    assert is_mlmodelc(bundle) and not is_mlpackage(bundle)
    (bundle / "model.mil").unlink()
    assert not is_mlmodelc(bundle)
