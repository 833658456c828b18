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


def test_missing_stamp_with_matching_record_is_adopted(tmp_path):
    settings = {"precision": "float16"}
    record = tmp_path / "results" / "m" / "export" / "c.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"settings_sha256": settings_digest(settings)}))
    package = tmp_path / "results" / "m" / "c.mlpackage" / "Manifest.json"
    package.parent.mkdir(parents=True)
    package.write_text("{}")
    os.utime(record, (5e9, 5e9))  # pulled files have arbitrary mtimes
    stamp = _stamp(settings)
    report = st.sync([stamp], {"m": [tmp_path / "results" / "m"]})
    assert report["adopted"] == [str(stamp.path)]
    assert stamp.path.stat().st_mtime == st.ADOPTED_MTIME
    assert record.stat().st_mtime == package.stat().st_mtime == package.parent.stat().st_mtime


def test_missing_stamp_with_other_record_is_created_newer_than_results(tmp_path):
    record = tmp_path / "results" / "m" / "export" / "c.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"settings_sha256": "something else"}))
    adopted = st.Stamp("m", "export/a", {"x": 1}, tmp_path / "results" / "m" / "export" / "a.json")
    (tmp_path / "results" / "m" / "export" / "a.json").write_text(
        json.dumps({"settings_sha256": settings_digest({"x": 1})}))
    stale = _stamp({"precision": "float32"})
    report = st.sync([adopted, stale], {"m": [tmp_path / "results" / "m"]})
    assert report["adopted"] == [str(adopted.path)] and report["created"] == [str(stale.path)]
    # the edited job's stamp must be strictly newer than the adopted (equalised) outputs
    assert stale.path.stat().st_mtime > record.stat().st_mtime


def test_unreadable_record_is_not_adopted(tmp_path):
    record = tmp_path / "results" / "m" / "export" / "c.json"
    record.parent.mkdir(parents=True)
    record.write_text("{not json")
    assert st.sync([_stamp({"a": 1})])["created"]
