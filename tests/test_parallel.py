"""`make test`'s parallel run keeps each work unit on one worker (tests/conftest.py's units).

pytest 9.2 stores a node's id where pytest-xdist 3.8's ``--dist loadgroup`` can no longer rename it:
the groups were then split silently across workers, and each worker built the shared workspaces
(minutes each) again. This runs xdist as ``make test`` does, in a separate process, on generated
tests that use the real hook and the real fixture names, and asserts where each test ran."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CONFTEST = r"""
import os
import pytest
from tests.conftest import pytest_collection_modifyitems  # noqa: F401 (the hook under test)


def _where(name):
    with open(os.environ["KILN_PARALLEL_RECORD"], "a") as record:   # a fixture build: where it ran
        record.write(f"BUILT {name}:{os.environ['PYTEST_XDIST_WORKER']}:{os.getpid()}\n")
    return f"{name}:{os.environ['PYTEST_XDIST_WORKER']}:{os.getpid()}"


@pytest.fixture(autouse=True)
def _ran(request):
    yield
    with open(os.environ["KILN_PARALLEL_RECORD"], "a") as record:
        record.write(f"RAN {request.node.name}:{os.environ['PYTEST_XDIST_WORKER']}:{os.getpid()}\n")


@pytest.fixture(scope="session")
def built_workspace():
    return _where("built_workspace")


@pytest.fixture(scope="module")
def module_build():
    return _where("module_build")
"""

SHARED_A = """
def test_a1(built_workspace): assert built_workspace
def test_a2(built_workspace): assert built_workspace
"""

SHARED_B = """
def test_b1(built_workspace): assert built_workspace
def test_b2(built_workspace): assert built_workspace
"""

MODULE = """
def test_m1(module_build): assert module_build
def test_m2(module_build): assert module_build
def test_m3(module_build): assert module_build
"""

LOOSE = "\n".join(f"def test_loose_{i}(): pass" for i in range(6))


def test_tests_sharing_a_fixture_run_in_one_worker_and_build_it_once(tmp_path):
    for name, text in {"conftest.py": CONFTEST, "test_shared_a.py": SHARED_A, "test_shared_b.py": SHARED_B,
                       "test_module.py": MODULE, "test_loose.py": LOOSE}.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    record = tmp_path / "record.txt"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "KILN_PARALLEL_RECORD": str(record)}
    out = subprocess.run([sys.executable, "-m", "pytest", "-v", "-n", "2", "--dist", "loadgroup",
                          "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = record.read_text().splitlines()
    built = [line.split()[1].split(":") for line in lines if line.startswith("BUILT ")]
    ran = {line.split()[1].split(":")[0]: line.split()[1].split(":")[1] for line in lines if line.startswith("RAN ")}
    assert len(ran) == 13, lines
    # each fixture built once, and every test of its unit ran on that worker
    assert sorted(name for name, _, _ in built) == ["built_workspace", "module_build"], lines
    for name, worker, _ in built:
        prefixes = ("test_a", "test_b") if name == "built_workspace" else ("test_m",)
        users = [t for t in ran if t.startswith(prefixes)]
        assert {ran[t] for t in users} == {worker}, (name, lines)
    # work is still spread: the loose tests are not all queued behind the units
    assert len(set(ran.values())) == 2, lines
    # the unit names reach xdist's scheduler (the id suffix it groups by)
    assert re.search(r"test_shared_b\.py::test_b1@built_workspace", out.stdout), out.stdout
    assert "13 passed" in out.stdout
