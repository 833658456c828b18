"""A job killed half-way leaves temporaries; `dvc commit -f` must not record them (`.dvcignore`)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def _manifest_paths(workspace) -> list[str]:
    """Relative paths DVC recorded for the `results` output (its `.dir` listing in the cache)."""
    import yaml

    lock = yaml.safe_load((workspace.root / "dvc.lock").read_text())
    out = next(o for o in lock["stages"]["build"]["outs"] if o["path"] == "results")
    digest = out["md5"]
    listing = workspace.root / ".dvc" / "cache" / "files" / "md5" / digest[:2] / digest[2:]
    return [entry["relpath"] for entry in json.loads(listing.read_text())]


def test_dvcignore_lists_the_writers_temporary_pattern(workspace):
    from kiln.foundation.fsutil import TEMPORARY_GLOB

    assert TEMPORARY_GLOB in (workspace.root / ".dvcignore").read_text().splitlines()


def test_crash_temporaries_are_not_committed(workspace):
    target = "results/silero_vad/unified.mlpackage"
    killed = workspace.snakemake("--cores", "1", target, check=False, env={"KILN_FAILPOINT": "export.save:kill"})
    assert killed.returncode != 0
    results = workspace.root / "results"
    leftovers = [p for p in results.rglob("*.tmp")]
    assert leftovers, "the killed export left no temporary: the test would prove nothing"
    assert any(p.name.startswith(".unified.mlpackage.") and p.name.endswith(".dir.tmp") for p in leftovers)

    workspace.dvc("commit", "-f")
    recorded = _manifest_paths(workspace)
    assert any(path.startswith("silero_vad/") for path in recorded)  # the fetch's outputs are there
    temporary = [path for path in recorded if any(part.endswith(".tmp") for part in path.split("/"))]
    assert temporary == []
    assert all(p.exists() for p in leftovers)  # ignored, not deleted: the next run cleans them
