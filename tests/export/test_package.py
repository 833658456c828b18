"""Exported packages are deterministic, and a failed save leaves nothing behind."""

from __future__ import annotations

import json

import pytest

from kiln.export.convert import export_component
from kiln.export.package import MANIFEST_NAMESPACE, deterministic_manifest
from kiln.foundation.failpoints import InjectedFailure
from kiln.models import get_family


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("component", ["unified", "unified_256ms"])
def test_two_exports_are_byte_identical(tmp_path, kiln_config, silero_net, component):
    family = get_family("silero_vad")
    comp = kiln_config.component("silero_vad", component)
    a = tmp_path / "a" / f"{component}.mlpackage"
    b = tmp_path / "b" / f"{component}.mlpackage"
    report = export_component(family, silero_net, comp, a, metadata={"kiln.model": "silero_vad"})
    export_component(family, silero_net, comp, b, metadata={"kiln.model": "silero_vad"})
    files_a, files_b = _files(a), _files(b)
    assert set(files_a) == {"Manifest.json", "Data/com.apple.CoreML/model.mlmodel",
                            "Data/com.apple.CoreML/weights/weight.bin"}
    assert files_a == files_b
    assert report["specification_version"] == 8 and report["opset"] == "CoreML7"
    assert b"conversion_date" not in files_a["Data/com.apple.CoreML/model.mlmodel"]


def test_manifest_ids_depend_only_on_item_paths():
    manifest = {"fileFormatVersion": "1.0.0", "rootModelIdentifier": "r-1", "itemInfoEntries": {
        "r-1": {"path": "com.apple.CoreML/model.mlmodel", "name": "model.mlmodel"},
        "w-2": {"path": "com.apple.CoreML/weights", "name": "weights"}}}
    other = json.loads(json.dumps(manifest).replace("r-1", "x-9").replace("w-2", "y-8"))
    assert deterministic_manifest(manifest) == deterministic_manifest(other)
    out = deterministic_manifest(manifest)
    root = out["rootModelIdentifier"]
    assert out["itemInfoEntries"][root]["name"] == "model.mlmodel"
    import uuid
    assert root == str(uuid.uuid5(MANIFEST_NAMESPACE, "com.apple.CoreML/model.mlmodel")).upper()


def test_failed_save_leaves_previous_artifact_and_no_temporaries(tmp_path, kiln_config, silero_net,
                                                                monkeypatch):
    family = get_family("silero_vad")
    comp = kiln_config.component("silero_vad", "unified")
    out = tmp_path / "unified.mlpackage"
    export_component(family, silero_net, comp, out)
    before = _files(out)
    monkeypatch.setenv("KILN_FAILPOINT", "export.save:raise")
    with pytest.raises(InjectedFailure):
        export_component(family, silero_net, comp, out, metadata={"changed": "yes"})
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unified.mlpackage"]


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path, kiln_config, silero_net):
    family = get_family("silero_vad")
    comp = kiln_config.component("silero_vad", "unified")
    stale = tmp_path / ".unified.mlpackage.abc123.dir.tmp"
    (stale / "unified.mlpackage").mkdir(parents=True)
    export_component(family, silero_net, comp, tmp_path / "unified.mlpackage")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unified.mlpackage"]
