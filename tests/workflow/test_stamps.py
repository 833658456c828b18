"""Stamp sync: unchanged, changed, created and adopted stamps, and mtime equalisation."""

from __future__ import annotations

import json
import os

import pytest

from kiln.config import settings_digest
from kiln.workflow import stamps as st


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _stamp(settings, record="results/m/export/c.json"):
    from pathlib import Path
    return st.Stamp("m", "export/c", settings, Path(record))


def test_created_then_unchanged_then_changed(tmp_path):
    stamp = _stamp({"precision": "float16"})
    assert st.sync([stamp])["created"] == [str(stamp.path)]
    mtime = stamp.path.stat().st_mtime_ns
    assert st.sync([stamp]) == {"changed": [], "created": [], "adopted": []}
    assert stamp.path.stat().st_mtime_ns == mtime
    edited = _stamp({"precision": "float32"})
    assert st.sync([edited])["changed"] == [str(edited.path)]
    assert json.loads(edited.path.read_text()) == {"precision": "float32"}


def test_missing_stamp_with_matching_record_is_adopted_touching_only_the_stamp(tmp_path):
    settings = {"precision": "float16"}
    record = tmp_path / "results" / "m" / "export" / "c.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"settings_sha256": settings_digest(settings)}))
    package = tmp_path / "results" / "m" / "c.mlpackage" / "Manifest.json"
    package.parent.mkdir(parents=True)
    package.write_text("{}")
    os.utime(record, (5e9, 5e9))  # pulled files have arbitrary mtimes
    os.utime(package, (4e9, 4e9))
    os.utime(package.parent, (3e9, 3e9))
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "results").rglob("*")}
    before[tmp_path / "results"] = (tmp_path / "results").stat().st_mtime_ns
    stamp = _stamp(settings)
    report = st.sync([stamp])
    assert report["adopted"] == [str(stamp.path)]
    assert stamp.path.stat().st_mtime == st.ADOPTED_MTIME
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_missing_stamp_with_other_record_is_created_newer_than_results(tmp_path):
    record = tmp_path / "results" / "m" / "export" / "c.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"settings_sha256": "something else"}))
    adopted = st.Stamp("m", "export/a", {"x": 1}, tmp_path / "results" / "m" / "export" / "a.json")
    (tmp_path / "results" / "m" / "export" / "a.json").write_text(
        json.dumps({"settings_sha256": settings_digest({"x": 1})}))
    os.utime(record, (5e9, 5e9))
    stale = _stamp({"precision": "float32"})
    report = st.sync([adopted, stale])
    assert report["adopted"] == [str(adopted.path)] and report["created"] == [str(stale.path)]
    # the edited job's stamp is newer than its output; the output itself is left alone
    assert stale.path.stat().st_mtime > adopted.path.stat().st_mtime
    assert record.stat().st_mtime == 5e9


def test_unreadable_record_is_not_adopted(tmp_path):
    record = tmp_path / "results" / "m" / "export" / "c.json"
    record.parent.mkdir(parents=True)
    record.write_text("{not json")
    assert st.sync([_stamp({"a": 1})])["created"]
