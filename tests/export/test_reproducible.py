"""Packages and compiled bundles are byte-identical across processes and checkout paths.

Each build runs in its own interpreter (protobuf map order and hash seeds differ per process) from
its own copy of the repository (so no absolute path can leak into the artifacts unnoticed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers.workspaces import REPO, workflow_files

EXPORT = """
from kiln.config import load_config
from kiln import layout
from kiln.workflow import jobs
from kiln.workflow.entry import bound_config
config = load_config("config.yaml")
m, c = "silero_vad", "unified"
jobs.fetch_job(config, model=m, record=layout.SOURCE.path(config, model=m),
               checkpoint_dir=layout.CHECKPOINT_DIR.path(config, model=m))
programs = {name: str(layout.PREPARED_PROGRAM.path(config, model=m, component=name))
            for name in config.model(m).components}
jobs.prepare_job(config, model=m, source=layout.SOURCE.path(config, model=m), programs=programs,
                 facts=layout.FACTS.path(config, model=m), contracts=layout.CONTRACTS.path(config, model=m),
                 record=layout.PREPARE_RECORD.path(config, model=m))
# as the workflow's job entry does: the later jobs' config bound to the contracts prepare resolved
config = bound_config(config, m, layout.CONTRACTS.path(config, model=m))
jobs.export_job(config, model=m, component=c, source=layout.SOURCE.path(config, model=m), program=programs[c],
                package=layout.PACKAGE.path(config, model=m, component=c),
                record=layout.EXPORT_RECORD.path(config, model=m, component=c))
"""


def _checkout(root: Path) -> Path:
    for rel in workflow_files():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest)
    return root


def _build(checkout: Path) -> dict[str, bytes]:
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    env.pop("PYTHONHASHSEED", None)
    env.pop("KILN_FAILPOINT", None)
    for args in ([sys.executable, "-c", EXPORT],
                 [sys.executable, "-m", "kiln.cli", "compile", "results/silero_vad/unified.mlpackage"]):
        done = subprocess.run(args, cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    out = {}
    for bundle in ("unified.mlpackage", "unified.mlmodelc"):
        root = checkout / "results" / "silero_vad" / bundle
        out.update({f"{bundle}/{p.relative_to(root).as_posix()}": p.read_bytes()
                    for p in sorted(root.rglob("*")) if p.is_file()})
    return out


def test_builds_in_two_processes_and_checkouts_are_byte_identical(tmp_path):
    first = _build(_checkout(tmp_path / "one" / "kiln"))
    second = _build(_checkout(tmp_path / "elsewhere" / "deeper" / "kiln"))
    assert "unified.mlpackage/Data/com.apple.CoreML/model.mlmodel" in first
    assert "unified.mlmodelc/model.mil" in first
    assert sorted(first) == sorted(second)
    differing = [name for name in first if first[name] != second[name]]
    assert differing == []
    spec = first["unified.mlpackage/Data/com.apple.CoreML/model.mlmodel"]
    assert b"kiln.settings_sha256" in spec and str(tmp_path).encode() not in spec
