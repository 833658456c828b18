"""Workspaces: a copy of the workflow's files in a temporary git repository, run with this venv (the
fixtures are registered by tests/conftest.py for tests/workflow and tests/scenarios)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Callable

import pytest
from filelock import FileLock

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
    # every job, so the run's hooks record
    ws.run(str(VENV_BIN / "python"), "-c", TOUCH_FAST, "--touch", "--forceall", "--cores", "1", *targets)


#: `snakemake` with its touch executor's pause per job cut from 0.1 s to 0.01 s (7 of the 11 s that
#: `--touch` took for the 72 jobs of three models). The pause keeps a job's outputs newer than its
#: inputs; 10 ms is still above the kernel's file-time tick (4 ms here: two touches 10 ms apart
#: measured 8 ms apart or more), so the mtimes keep the order of a real build.
TOUCH_FAST = ("import sys; import snakemake.executors.touch as touch; touch.Executor.SLEEPING_TIME = 0.01; "
              "from snakemake.cli import main; sys.argv[0] = 'snakemake'; sys.exit(main())")


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


def shared_build(tmp_path_factory, name: str, build: Callable[[Path], Workspace]) -> Workspace:
    """The workspace ``build(root)`` makes, built once per test run whichever pytest-xdist worker asks
    first: it lives in the run's base temporary folder (the workers' common parent), behind a file
    lock, so another worker asking meanwhile waits for it instead of building it again. A template:
    tests take a :func:`copy_built` of it (never edit it in place). A failed build is recorded, and
    every later ask fails with its error at once instead of building again."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent                        # popen-gwN's parent: this run's, shared by its workers
    folder = base / "shared-builds"
    folder.mkdir(exist_ok=True)
    root, done, failed = folder / name, folder / f"{name}.done", folder / f"{name}.failed"
    with FileLock(str(folder / f"{name}.lock")):
        if failed.exists():
            raise AssertionError(f"the shared build {name!r} failed earlier in this run:\n{failed.read_text()}")
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)
            try:
                build(root / "kiln")
            except BaseException:
                failed.write_text(traceback.format_exc()[-8000:])
                raise
            done.touch()
    return Workspace(root / "kiln")


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


def _build_small(root: Path) -> Workspace:
    ws = small_workspace(root)
    ws.snakemake("--cores", "2", "all")
    return ws


@pytest.fixture(scope="session")
def small_built(tmp_path_factory) -> Workspace:
    """:func:`small_workspace` after `snakemake --cores 2 all`, built once per run (:func:`shared_build`):
    a template, to :func:`copy_built` (the S3 round trip starts from a copy)."""
    return shared_build(tmp_path_factory, "small", _build_small)


@pytest.fixture(scope="session")
def built_workspace(small_built, tmp_path_factory) -> Workspace:
    """A copy of :func:`small_built` (shared by the report, ONNX and slurm tests, which only read it;
    the report writes report.html beside it, which the template must not get)."""
    return copy_built(small_built, tmp_path_factory.mktemp("built") / "kiln")


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


def _build_silero(root: Path) -> Workspace:
    ws = make_workspace(root)
    ws.snakemake("--cores", "2", "all")
    return ws


@pytest.fixture()
def built_silero_workspace(tmp_path_factory, tmp_path) -> Workspace:
    """The :func:`workspace` after `snakemake --cores 2 all`: a copy (at the same place, tmp_path/kiln)
    of the one build of it this run makes (:func:`shared_build`), for the tests that start from that
    build and edit it (Snakemake's incremental plans, DVC's fresh clone)."""
    return copy_built(shared_build(tmp_path_factory, "silero", _build_silero), tmp_path / "kiln")


#: the aggregate targets of Silero VAD (`all`), the tiny Parakeet TDT and the tiny Kokoro
FAMILY_TARGETS = ("all", "all_parakeet_tdt_v3_tiny", "all_kokoro_tiny")


def _fake_build_families(root: Path) -> Workspace:
    ws = make_workspace(root)
    fake_build(ws, *FAMILY_TARGETS)
    return ws


@pytest.fixture()
def fake_built_families(tmp_path_factory, tmp_path) -> Workspace:
    """The :func:`workspace` with every job of :data:`FAMILY_TARGETS` marked done by :func:`fake_build`:
    a copy (at tmp_path/kiln) of the one such workspace this run makes (:func:`shared_build`), for the
    planning tests that edit code and dry-run (each fake build of these 72 jobs is a few seconds)."""
    return copy_built(shared_build(tmp_path_factory, "fake-families", _fake_build_families), tmp_path / "kiln")


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
