"""`kiln check results/<model>` and `verify_artifact`: an artifact whose bytes differ from its job
record is named, whatever touched it (a flipped byte, a same-size edit with its mtime restored)."""

from __future__ import annotations

import json
import os

import pytest

from kiln.cli import main
from kiln.fsutil import sha256_tree, write_json
from kiln.integrity import DigestCache, IntegrityError, check_results, verify_artifact


@pytest.fixture
def results(tmp_path, monkeypatch):
    """A checkout with results/m: a package, a bundle, a checkpoint and the records naming them."""
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "results" / "m"
    package = model / "c.mlpackage"
    (package / "Data" / "com.apple.CoreML" / "weights").mkdir(parents=True)
    (package / "Manifest.json").write_text("{}")
    (package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").write_bytes(bytes(range(256)) * 64)
    bundle = model / "c.mlmodelc"
    (bundle / "weights").mkdir(parents=True)
    (bundle / "model.mil").write_text("program(1.0)")
    (bundle / "weights" / "weight.bin").write_bytes(bytes(range(256)) * 64)
    checkpoint = model / "checkpoint" / "w.ckpt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"weights" * 100)

    def entry(path):
        return {"path": str(path.relative_to(tmp_path)), "sha256": sha256_tree(path), "size_bytes": 1}

    write_json(model / "source.json", {"files": [{"role": "checkpoint", **entry(checkpoint)}]})
    write_json(model / "export" / "c.json", {"package": entry(package)})
    write_json(model / "compile" / "c.json", {"bundle": entry(bundle)})
    return model


def test_an_intact_tree_passes(results, capsys):
    assert main(["check", str(results)]) == 0
    assert "3/3 recorded artifacts match" in capsys.readouterr().out
    cache = json.loads((results.parents[1] / ".kiln" / "cache" / "digests.json").read_text())["files"]
    assert len(cache) == 5  # every file hashed once, remembered by size/mtime/ctime/inode


def test_a_flipped_byte_is_named_with_its_record(results, capsys):
    main(["check", str(results)])  # warm the cache: a cached digest must not hide the change
    weight = results / "c.mlmodelc" / "weights" / "weight.bin"
    data = bytearray(weight.read_bytes())
    data[1000] ^= 0x01
    stat = weight.stat()
    weight.write_bytes(bytes(data))
    os.utime(weight, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime
    assert main(["check", str(results)]) == 2
    err = capsys.readouterr().err
    assert "c.mlmodelc: content does not match its record" in err
    assert str(results / "compile" / "c.json") in err
    assert "c.mlpackage" not in err.split("kiln: error")[0]  # only the damaged artifact is named
    assert "1 artifact(s) do not match" in err


def test_a_missing_artifact_is_named(results):
    (results / "checkpoint" / "w.ckpt").unlink()
    artifacts, problems = check_results(results, DigestCache(None))
    assert len(artifacts) == 3 and len(problems) == 1
    assert "w.ckpt: missing" in problems[0] and "source.json" in problems[0]


def test_verify_artifact(results):
    package = results / "c.mlpackage"
    verify_artifact(package, sha256_tree(package), DigestCache(None))
    (package / "Manifest.json").write_text('{"x": 1}')
    with pytest.raises(IntegrityError, match="c.mlpackage: content does not match"):
        verify_artifact(package, json.loads((results / "export" / "c.json").read_text())["package"]["sha256"])
