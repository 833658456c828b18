"""`kiln check results/<model>` and `verify_artifact`: an artifact whose bytes differ from its job
record is named, whatever touched it (a flipped byte, a same-size edit with its mtime restored)."""

from __future__ import annotations

import json
import os

import pytest

from kiln.cli import main
from kiln.foundation.fsutil import sha256_tree, write_json
from kiln.integrity.artifacts import DigestCache, IntegrityError, check_results, verify_artifact


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


# -- `kiln check` in a separate process: where recorded paths are found -------------------------------

def _kiln(*args, cwd):
    import subprocess
    import sys
    from pathlib import Path

    return subprocess.run([str(Path(sys.executable).parent / "kiln"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def installed_weights(tmp_path):
    """A checkout whose model ``silero_vad`` takes its weights from a package installed in the
    checkout's own venv: the recorded checkout-relative path names a folder ``silero_vad`` too."""
    checkout = tmp_path / "checkout"
    weights = checkout / ".venv/lib/python3.12/site-packages/silero_vad/data/silero_vad.jit"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"jit weights" * 50)
    model = checkout / "results" / "silero_vad"
    bundle = model / "unified.mlmodelc"
    bundle.mkdir(parents=True)
    (bundle / "model.mil").write_text("program(1.0)")
    write_json(model / "source.json", {"files": [{"role": "checkpoint", "path": str(weights.relative_to(checkout)),
                                                  "sha256": sha256_tree(weights), "size": 550}]})
    write_json(model / "compile" / "unified.json", {"bundle": {"path": "results/silero_vad/unified.mlmodelc",
                                                               "sha256": sha256_tree(bundle)}})
    return checkout


@pytest.mark.parametrize("where", ["checkout", "elsewhere"])
def test_installed_weights_named_after_the_model_are_found_from_any_directory(installed_weights, tmp_path, where):
    before = sorted(p for p in installed_weights.rglob("*") if ".kiln" not in p.parts)
    target = "results/silero_vad" if where == "checkout" else str(installed_weights / "results/silero_vad")
    out = _kiln("check", target, cwd=installed_weights if where == "checkout" else tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("silero_vad: 2/2 recorded artifacts match")
    weights = installed_weights / ".venv/lib/python3.12/site-packages/silero_vad/data/silero_vad.jit"
    weights.write_bytes(b"upgraded" * 10)   # the package changed under the build: named where it is
    changed = _kiln("check", str(installed_weights / "results/silero_vad"), cwd=tmp_path)
    assert changed.returncode == 2
    assert f"{weights}: content does not match its record" in changed.stderr
    assert "results/silero_vad/data" not in changed.stderr
    assert sorted(p for p in installed_weights.rglob("*") if ".kiln" not in p.parts) == before


def test_a_recorded_path_leaving_the_checkout_is_named_and_not_read(installed_weights, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host file")
    model = installed_weights / "results/silero_vad"
    write_json(model / "export" / "unified.json", {"package": {"path": "../secret.txt", "sha256": sha256_tree(secret)}})
    out = _kiln("check", "results/silero_vad", cwd=installed_weights)
    assert out.returncode == 2
    assert "../secret.txt: a recorded path leaving the checkout (not read)" in out.stderr
    assert "1 artifact(s) do not match" in out.stderr and "Traceback" not in out.stderr
