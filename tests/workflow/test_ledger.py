"""The content ledger: byte-identical rewrites get their recorded mtime back, real edits do not."""

from __future__ import annotations

import json
import os

import pytest

from kiln.integrity import digests
from kiln.foundation.fsutil import sha256_tree
from kiln.workflow import ledger as lg

OLD = 1_600_000_000_000_000_000  # ns


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _write(path, data: bytes, mtime_ns: int = OLD):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def _tree():
    _write("results/m/export/c.json", b'{"a": 1}\n')
    _write("results/m/c.mlpackage/Manifest.json", b"{}\n")
    _write("results/m/c.mlpackage/Data/com.apple.CoreML/model.mlmodel", b"spec")
    os.utime("results/m/c.mlpackage", ns=(OLD, OLD))
    _write("results/m/.c.mlpackage.x1.dir.tmp/junk", b"temporary")
    _write(".kiln/stamps/m/export/c.json", b'{"p": 16}\n')
    _write("src/kiln/mod.py", b"x = 1\n")
    _write("src/kiln/__pycache__/mod.cpython-311.pyc", b"bytecode")
    return lg.Ledger("results/.kiln-ledger.json", ["results", ".kiln/stamps", "src/kiln", "scripts"])


def test_tracked_paths_take_bundles_as_units_and_skip_temporaries():
    ledger = _tree()
    assert lg.tracked_paths(ledger.roots) == [
        ".kiln/stamps/m/export/c.json", "results/m/c.mlpackage", "results/m/export/c.json",
        "src/kiln/mod.py"]


def test_bundle_digest_equals_sha256_tree():
    _tree()
    _write("results/m/c.mlpackage/.snakemake_timestamp", b"")
    assert lg.DigestCache().digest("results/m/c.mlpackage") == sha256_tree("results/m/c.mlpackage")


def test_identical_rewrites_get_their_mtime_back_and_edits_keep_theirs():
    ledger = _tree()
    assert ledger.record() == 4
    _write("results/m/c.mlpackage/Manifest.json", b"{}\n", mtime_ns=OLD + 5)  # same bytes
    os.utime("results/m/c.mlpackage", ns=(OLD + 5, OLD + 5))
    _write(".kiln/stamps/m/export/c.json", b'{"p": 16}\n', mtime_ns=OLD + 7)   # edited, reverted
    _write("src/kiln/mod.py", b"x = 2\n", mtime_ns=OLD + 9)                     # a real edit
    assert ledger.restore() == [".kiln/stamps/m/export/c.json", "results/m/c.mlpackage"]
    assert os.stat("results/m/c.mlpackage").st_mtime_ns == OLD
    assert os.stat(".kiln/stamps/m/export/c.json").st_mtime_ns == OLD
    assert os.stat("src/kiln/mod.py").st_mtime_ns == OLD + 9
    assert ledger.restore() == []


def test_a_bundle_marker_carries_the_restored_mtime():
    ledger = _tree()
    ledger.record()
    _write("results/m/c.mlpackage/.snakemake_timestamp", b"", mtime_ns=OLD + 3)
    assert lg.visible_mtime_ns("results/m/c.mlpackage") == OLD + 3
    assert ledger.restore() == ["results/m/c.mlpackage"]
    assert os.stat("results/m/c.mlpackage/.snakemake_timestamp").st_mtime_ns == OLD
    assert lg.visible_mtime_ns("results/m/c.mlpackage") == OLD


def test_restore_hashes_only_files_whose_mtime_moved(monkeypatch):
    ledger = _tree()
    ledger.record()
    hashed = []
    real = digests.sha256_file
    monkeypatch.setattr(digests, "sha256_file", lambda path: hashed.append(path) or real(path))
    _write("results/m/export/c.json", b'{"a": 1}\n', mtime_ns=OLD + 1)
    assert ledger.restore() == ["results/m/export/c.json"]
    assert hashed == [os.path.abspath("results/m/export/c.json")]


def test_record_rewrites_the_ledger_only_when_it_changed():
    ledger = _tree()
    ledger.record()
    os.utime(ledger.path, ns=(OLD, OLD))
    ledger.record()
    assert os.stat(ledger.path).st_mtime_ns == OLD
    _write("results/m/new.json", b"{}")
    ledger.record()
    assert "results/m/new.json" in json.loads(ledger.path.read_text())["entries"]


def test_unreadable_ledger_is_an_error_naming_it():
    ledger = _tree()
    _write(str(ledger.path), b"{broken")
    with pytest.raises(lg.LedgerError, match=r"results/.kiln-ledger.json: not JSON"):
        ledger.restore()


def test_a_bundle_edited_in_place_gets_its_newest_file_mtime():
    ledger = _tree()
    ledger.record()
    _write("results/m/c.mlpackage/Data/com.apple.CoreML/model.mlmodel", b"edited", mtime_ns=OLD + 50)
    os.utime("results/m/c.mlpackage", ns=(OLD, OLD))  # writing a file inside left the directory alone
    assert ledger.restore() == []
    assert lg.visible_mtime_ns("results/m/c.mlpackage") == OLD + 50
