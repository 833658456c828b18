"""`all` names every component's .mlpackage and .mlmodelc: one deleted from a built tree (a failed
re-export deletes its job's outputs) is built again by `snakemake all`, in a separate process, though
every record downstream of it is up to date. Before, `all` named only the records and planned nothing."""

from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.slow


def test_a_deleted_package_or_bundle_is_planned_again_by_all(fake_built_families):
    ws = fake_built_families
    assert ws.planned_jobs("all") == []
    shutil.rmtree(ws.root / "results" / "silero_vad" / "unified.mlpackage")
    planned = ws.planned_jobs("all")
    assert ("export", {"model": "silero_vad", "component": "unified"}) in planned
    shutil.rmtree(ws.root / "results" / "silero_vad" / "unified_256ms.mlmodelc")
    planned = ws.planned_jobs("all")
    assert ("compile", {"model": "silero_vad", "component": "unified_256ms"}) in planned
