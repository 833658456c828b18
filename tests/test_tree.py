"""The tests mirror the code: a folder of tests/ is a package of src/kiln, a top-level test file a
module of it; the exceptions are named here with what they test."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KILN = REPO / "src" / "kiln"
#: folders of tests/ that are not a kiln package
NOT_PACKAGES = {
    "helpers": "shared test code: workspaces, the local S3 and Slurm servers, golden bundles",
    "scenarios": "end-to-end scenarios: Snakemake, DVC and kiln run as a user runs them (all slow)",
    "conformance": "coremltools' own MIL op tests run on kiln's executor (kiln.mil)",
}
#: top-level test files that test the repository rather than one module
NOT_MODULES = {
    "test_benchmarks.py": "benchmarks/ (make bench)",
    "test_envs.py": "envs/kiln.yaml against the pins",
    "test_golden_policy.py": "the golden tests fail under CI when ../shared/golden is missing",
    "test_parallel.py": "make test's xdist work units (tests/conftest.py) stay on one worker",
    "test_tree.py": "this file",
}


def _is_kiln(rel: Path) -> bool:
    base = KILN / rel
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def test_every_test_folder_is_a_kiln_package():
    folders = sorted(p.name for p in (REPO / "tests").iterdir()
                     if p.is_dir() and p.name not in NOT_PACKAGES and not p.name.startswith(("_", ".")))
    assert [f for f in folders if not _is_kiln(Path(f))] == []


def test_every_top_level_test_file_is_a_kiln_module():
    files = sorted(p.name for p in (REPO / "tests").glob("test_*.py") if p.name not in NOT_MODULES)
    assert [f for f in files if not _is_kiln(Path(f.removeprefix("test_").removesuffix(".py")))] == []


def test_scenarios_are_slow_and_units_are_not_scenarios():
    """Every file of tests/scenarios runs something a user runs (a workspace, Snakemake, DVC or the
    kiln command in a separate process)."""
    markers = ("workspace", "snakemake", "Workspace", "VENV_BIN", "copy_workflow")
    lazy = [p.name for p in sorted((REPO / "tests" / "scenarios").glob("test_*.py"))
            if not any(m in p.read_text() for m in markers)]
    assert lazy == []
