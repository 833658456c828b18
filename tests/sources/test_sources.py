"""Each source kind of the registry, on its own."""

from __future__ import annotations

import hashlib

import pytest

from kiln.foundation.errors import ModelError, SourceError
from kiln.sources import SOURCE_KINDS, SourceFile, fetch, verify_file


def test_registry_has_the_five_kinds():
    assert set(SOURCE_KINDS) == {"pypi", "hf", "path", "random", "onnx"}


def test_pypi_records_version_and_sha256(tmp_path):
    import importlib.metadata

    record = fetch("vad", "silero_vad", {"kind": "pypi", "package": "silero-vad", "module": "silero_vad",
                                         "resource": "data/silero_vad.jit"}, tmp_path)
    assert record.version == importlib.metadata.version("silero-vad")
    assert record.id == f"silero-vad=={record.version}"
    (file,) = record.files
    assert file.sha256 == hashlib.sha256(open(file.path, "rb").read()).hexdigest()
    assert not record.synthetic


def test_pypi_missing_package_and_resource(tmp_path):
    with pytest.raises(SourceError, match="package 'no-such-dist' is not installed"):
        fetch("vad", "silero_vad", {"kind": "pypi", "package": "no-such-dist", "module": "x",
                                    "resource": "a"}, tmp_path)
    with pytest.raises(SourceError, match="checkpoint file not found: .*missing.jit"):
        fetch("vad", "silero_vad", {"kind": "pypi", "package": "silero-vad", "module": "silero_vad",
                                    "resource": "data/missing.jit"}, tmp_path)


def _fake_distribution(root, version):
    """An installed distribution ``fakepkg==version`` under ``root`` with a weights file."""
    info = root / f"fakepkg-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakepkg\nVersion: {version}\n")
    (root / "fakepkg" / "data").mkdir(parents=True)
    (root / "fakepkg" / "data" / "w.bin").write_bytes(f"weights {version}".encode())


def test_pypi_pinned_version_comes_from_the_environment_or_beside_it(tmp_path, monkeypatch):
    """``source.version`` takes that release: on sys.path, else in <prefix>/extra/<package>-<version>
    (where the Makefile installs a release the environment does not import); another version is an
    error naming the pin and what is installed."""
    import sys

    _fake_distribution(tmp_path / "site", "1.0")
    _fake_distribution(tmp_path / "prefix" / "extra" / "fakepkg-2.0", "2.0")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    spec = {"kind": "pypi", "package": "fakepkg", "module": "fakepkg", "resource": "data/w.bin"}
    for version in ("1.0", "2.0"):
        record = fetch("vad", "silero_vad", {**spec, "version": version}, tmp_path / "ckpt")
        assert (record.id, record.version) == (f"fakepkg=={version}", version)
        assert open(record.files[0].path, "rb").read() == f"weights {version}".encode()
    assert fetch("vad", "silero_vad", spec, tmp_path / "ckpt").version == "1.0"  # unpinned: the environment's
    with pytest.raises(SourceError) as err:
        fetch("vad", "silero_vad", {**spec, "version": "3.0"}, tmp_path / "ckpt")
    assert "model 'vad': source.version pins fakepkg==3.0" in str(err.value)
    assert "installed versions are: 1.0" in str(err.value) and "fakepkg-3.0" in str(err.value)


def test_silero_source_is_the_release_fluidaudio_loads(kiln_config, tmp_path):
    """config.yaml's silero_vad takes silero-vad 6.0.0 (not the environment's 6.2.3): its weights are
    another network's (the two releases' .jit files differ)."""
    record = fetch("silero_vad", "silero_vad", kiln_config.model("silero_vad").source, tmp_path)
    assert record.id == "silero-vad==6.0.0"
    assert record.files[0].sha256 == "b178b4bc39467ecd5e9eb0bc6f2fcc291c1cc1cc55a68fea8c0c2c0d5fbbe66c"
    onnx_source = kiln_config.model("silero_vad_onnx").source
    assert fetch("silero_vad", "silero_vad", {**onnx_source, "kind": "pypi"}, tmp_path).version == "6.2.3"


def test_path_source_checks_the_configured_sha(tmp_path):
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    record = fetch("m", "silero_vad", {"kind": "path", "path": str(ckpt), "sha256": digest}, tmp_path)
    assert record.files[0].sha256 == digest and record.version is None
    # the release a local file comes from, as configured (a contract's source_version is checked against it)
    assert fetch("m", "silero_vad", {"kind": "path", "path": str(ckpt), "version": "6.0.0"}, tmp_path).version == "6.0.0"
    with pytest.raises(SourceError, match="model.pth: sha256 .* does not match"):
        fetch("m", "silero_vad", {"kind": "path", "path": str(ckpt), "sha256": "0" * 64}, tmp_path)
    with pytest.raises(SourceError, match="not found: .*absent.nemo"):
        fetch("m", "silero_vad", {"kind": "path", "path": str(tmp_path / "absent.nemo")}, tmp_path)


def test_hf_source_offline_names_the_repo(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = {"kind": "hf", "repo_id": "nvidia/parakeet-tdt-0.6b-v3", "filename": "parakeet-tdt-0.6b-v3.nemo",
            "revision": "0" * 40}
    with pytest.raises(SourceError, match="nvidia/parakeet-tdt-0.6b-v3/parakeet-tdt-0.6b-v3.nemo"):
        fetch("parakeet", "silero_vad", spec, tmp_path / "ckpt")


def test_random_source_needs_a_family_that_builds_one(tmp_path):
    from kiln.models import get_family

    spec = {"kind": "random", "architecture": "tiny", "seed": 0}
    with pytest.raises(ModelError, match="silero_vad' has no random-initialised"):
        fetch("m", "silero_vad", spec, tmp_path, build_random=get_family("silero_vad").make_random)
    # sources sit below the families: the builder is handed down (by the fetch job), never looked up
    with pytest.raises(SourceError, match="model 'm': a random source is built by its family's builder"):
        fetch("m", "silero_vad", spec, tmp_path)


def test_unknown_kind(tmp_path):
    with pytest.raises(SourceError, match="unknown source kind 'ftp'"):
        fetch("m", "silero_vad", {"kind": "ftp"}, tmp_path)


def test_verify_file_detects_corruption_and_absence(tmp_path):
    ckpt = tmp_path / "w.bin"
    ckpt.write_bytes(b"good")
    entry = SourceFile("checkpoint", str(ckpt), hashlib.sha256(b"good").hexdigest(), 4)
    assert verify_file(entry) == ckpt
    ckpt.write_bytes(b"evil")
    with pytest.raises(SourceError, match="w.bin: sha256 .* but the fetch recorded"):
        verify_file(entry)
    ckpt.unlink()
    with pytest.raises(SourceError, match="checkpoint file is missing: .*w.bin"):
        verify_file(entry)
