"""Workspaces: a copy of the workflow's files in a temporary git repository, run with this venv (the
fixtures are registered by tests/conftest.py for tests/workflow and tests/scenarios)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def workflow_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.split()
    return [f for f in out if not f.startswith(("tests/", "benchmarks/")) and (REPO / f).is_file()]


class Workspace:
    def __init__(self, root: Path):
        self.root = root
        self.env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                    "GIT_AUTHOR_NAME": "kiln", "GIT_AUTHOR_EMAIL": "kiln@example.invalid",
                    "GIT_COMMITTER_NAME": "kiln", "GIT_COMMITTER_EMAIL": "kiln@example.invalid"}
        self.env.pop("KILN_FAILPOINT", None)

    def run(self, *args: str, check: bool = True, env: dict | None = None, timeout: int = 900):
        result = subprocess.run(list(args), cwd=self.root, capture_output=True, text=True,
                                env={**self.env, **(env or {})}, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({result.returncode}) in {self.root}:\n"
                                 f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        return result

    def snakemake(self, *args: str, check: bool = True, env: dict | None = None):
        return self.run(str(VENV_BIN / "snakemake"), *args, check=check, env=env)

    def dvc(self, *args: str, check: bool = True):
        return self.run(str(VENV_BIN / "dvc"), *args, check=check)

    def git(self, *args: str, check: bool = True):
        return self.run("git", *args, check=check)

    def planned_jobs(self, *targets: str) -> list[tuple[str, dict]]:
        """(rule, wildcards) of every job a dry run plans."""
        out = self.snakemake("-n", *targets).stdout
        return parse_dry_run(out)

    def edit_config(self, edit) -> None:
        import yaml

        path = self.root / "config.yaml"
        data = yaml.safe_load(path.read_text())
        edit(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False))


def fake_build(ws: Workspace, *targets: str) -> None:
    """Mark every job ``targets`` still need as done without running it: empty placeholder outputs
    (bundle directories for .mlpackage/.mlmodelc), then ``snakemake --touch`` to order their mtimes
    as a real build would. For tests about planning, not about what the jobs compute."""
    out = ws.snakemake("-n", *targets).stdout
    for line in re.findall(r"^\s+output: (.*)$", out, re.M):
        for rel in line.split(", "):
            path = ws.root / rel
            if rel.endswith((".mlpackage", ".mlmodelc")):
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
    ws.snakemake("--touch", "--forceall", "--cores", "1", *targets)  # every job, so the run's hooks record


def parse_dry_run(out: str) -> list[tuple[str, dict]]:
    jobs = []
    # jobs of a group (the rules' `group:`, used by cluster executors) are printed indented under
    # their "Group job" header
    for block in re.split(r"\n(?=[ \t]*(?:local)?rule \w+:)", out):
        head = re.match(r"(?:local)?rule (\w+):", block.strip())
        if not head:
            continue
        wildcards = {}
        found = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        if found:
            wildcards = dict(part.split("=", 1) for part in found.group(1).split(", "))
        jobs.append((head.group(1), wildcards))
    return jobs


def copy_workflow(root: Path) -> Workspace:
    for rel in workflow_files():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest)
    return Workspace(root)


#: a fixed commit date: two workspaces of the same files get the same commit, so the kiln commit
#: their records carry (provenance.toolchain) is equal too (compared by the slurm test)
FIXED_DATE = {"GIT_AUTHOR_DATE": "2026-01-01T00:00:00+00:00", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00+00:00"}


def copy_built(ws: Workspace, root: Path) -> Workspace:
    """A copy of the built workspace ``ws`` at ``root`` (another checkout path, every mtime kept), for
    a test that edits what a shared workspace must keep: only what the edit touches rebuilds there."""
    shutil.copytree(ws.root, root, symlinks=True)
    return Workspace(root)


def commit_workspace(ws: Workspace) -> Workspace:
    ws.git("init", "-q", "-b", "main")
    ws.git("add", "-A")
    ws.run("git", "commit", "-q", "-m", "workspace", env=FIXED_DATE)
    return ws


#: the models of the shared built workspace: the PyTorch and the ONNX source of Silero VAD
BUILT_MODELS = ("silero_vad", "silero_vad_onnx")


def small_workspace(root: Path) -> Workspace:
    """Silero VAD from both sources, the `unified` component only, one quantization strategy: every
    stage of the workflow for two models (and two source kinds) in about two minutes."""
    ws = copy_workflow(root)

    def trim(config):
        config.setdefault("defaults", {})["quantize"] = {"strategies": ["int8_per_channel"]}
        for name, model in config["models"].items():
            if name in BUILT_MODELS:
                model["components"] = {"unified": model["components"]["unified"]}
                model.pop("quantize", None)
            else:
                model["enabled"] = False
    ws.edit_config(trim)
    # trimmed to `unified`, this Silero is not what FluidAudio loads (unified_256ms): without its
    # contract the workflow builds it under its own names (the contract check has its own test,
    # tests/scenarios/test_publish_verify.py)
    (ws.root / "contracts" / "silero_vad.yaml").unlink()
    return commit_workspace(ws)


@pytest.fixture(scope="session")
def built_workspace(tmp_path_factory) -> Workspace:
    """:func:`small_workspace` after `snakemake --cores 2 all` (shared by the report, ONNX and slurm
    tests, which only read it)."""
    ws = small_workspace(tmp_path_factory.mktemp("built") / "kiln")
    ws.snakemake("--cores", "2", "all")
    return ws


def make_workspace(root: Path) -> Workspace:
    """A copy of the workflow's files at ``root``, committed to a fresh git repository, with `all`
    trimmed to Silero VAD and one quantization strategy."""
    ws = copy_workflow(root)
    # Keep end-to-end runs short: one quantization strategy (each is tested in tests/quantize), and
    # `all` is Silero VAD only (the synthetic Parakeet has its own workflow test, by target name).
    def trim(config):
        config.setdefault("defaults", {})["quantize"] = {"strategies": ["int8_per_channel"]}
        for name, model in config["models"].items():
            if name != "silero_vad":
                model["enabled"] = False
    ws.edit_config(trim)
    return commit_workspace(ws)


@pytest.fixture()
def workspace(tmp_path) -> Workspace:
    return make_workspace(tmp_path / "kiln")


#: the tiny EOU and Kokoro targets, built by one Snakemake process (see tiny_streaming_and_tts)
TINY_TARGETS = ("results/parakeet_eou_tiny/metadata.json", "results/parakeet_eou_tiny/quantization_summary.json",
                "results/kokoro_tiny/metadata.json")


def _trim_tiny(config: dict) -> None:
    # test time: EOU at the 320 ms chunk only (the 160 ms pair is the same code at another size,
    # covered by tests/models/test_parakeet_eou.py) with one strategy on the streaming encoder;
    # Kokoro's 5 s variant only (kokoro_15s is the same network over three times the window;
    # tests/models/test_kokoro.py covers clamp and masks at other sizes)
    eou = config["models"]["parakeet_eou_tiny"]["components"]
    for name in [n for n, c in eou.items() if (c.get("options") or {}).get("chunk_ms") == 160]:
        del eou[name]
    eou["streaming_encoder"]["quantize"] = {"strategies": ["int8_per_channel"]}
    del config["models"]["kokoro_tiny"]["components"]["kokoro_15s"]


@pytest.fixture(scope="session")
def tiny_streaming_and_tts(tmp_path_factory) -> Workspace:
    """One fresh workspace in which a separate Snakemake process builds the tiny Parakeet EOU and
    Kokoro targets together: both chains of jobs share the cores, which halves the wall time of
    building them one after the other."""
    ws = make_workspace(tmp_path_factory.mktemp("tiny_families") / "kiln")
    ws.edit_config(_trim_tiny)
    ws.git("commit", "-q", "-am", "trim")
    ws.snakemake("--cores", "2", *TINY_TARGETS)
    return ws
