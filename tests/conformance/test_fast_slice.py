"""The fast conformance slice: a fixed set of coremltools' own MIL op test cases, run on kiln's
executor through the conformance plugin, covering every (opset, op) pair the suite's candidate cases
execute. ``make test`` runs it (the whole suite is ``make conformance``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kiln.mil.coverage import CONFORMANCE_COVERAGE, conformance_tested

from . import slice as fast_slice

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SLICE = HERE / "fast_slice.txt"
SUITE = "coremltools.converters.mil.mil.ops.tests"


def _slice_cases() -> list[str]:
    return [line.strip() for line in SLICE.read_text().splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def slice_summary(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("conformance") / "fast_slice.json"
    env = dict(os.environ, PYMIL_TEST_TARGETS="mlprogram", INCLUDE_MIL_FP32_UNIT_TESTS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "tests.conformance.plugin", "-p", "no:cacheprovider",
               "--pyargs", SUITE, "--kiln-slice", str(SLICE), "--kiln-summary", str(out)]
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert out.is_file(), f"the slice wrote no summary (exit {run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return json.loads(out.read_text())


def test_fast_slice_runs_every_listed_case_on_kiln_without_failures(slice_summary):
    cases = slice_summary["cases"]
    assert sorted(cases) == sorted(_slice_cases())
    failed = {c: v.get("reason") for c, v in cases.items() if v["outcome"] not in ("passed", "xfailed")}
    assert not failed, f"{len(failed)} conformance cases did not pass on kiln: {failed}"
    assert all(v.get("executed") for v in cases.values()), "every slice case must execute on kiln"


def test_fast_slice_executes_every_op_the_coverage_file_lists(slice_summary):
    listed = conformance_tested()
    assert listed, f"{CONFORMANCE_COVERAGE} is missing: run `make conformance-slice`"
    executed = {opset: set(ops) for opset, ops in slice_summary["tested_ops"].items()}
    missing = {opset: sorted(ops - executed.get(opset, set())) for opset, ops in listed.items()}
    assert not any(missing.values()), f"ops listed as tested that the slice no longer executes: {missing}"


def test_slice_selection_covers_every_passing_op_pair_with_few_cases():
    cases = {
        "a": {"outcome": "passed", "executed": True, "opset": "iOS15", "ops": ["const", "add", "mul"], "duration": 1.0},
        "b": {"outcome": "passed", "executed": True, "opset": "iOS15", "ops": ["add"], "duration": 0.1},
        "c": {"outcome": "passed", "executed": True, "opset": "iOS17", "ops": ["add", "relu"], "duration": 0.2},
        "d": {"outcome": "failed", "executed": True, "opset": "iOS17", "ops": ["gelu"], "duration": 0.1},
        "e": {"outcome": "skipped", "duration": 0.0},
    }
    assert fast_slice.select(cases) == ["a", "c"]
    cov = fast_slice.coverage(cases)["tested"]
    assert cov == {"iOS15": {"add": "a", "const": "a", "mul": "a"}, "iOS17": {"add": "c", "relu": "c"}}


def test_merge_lets_a_rerun_override_and_reads_a_stopped_runs_progress_file(tmp_path):
    first = {"cases": {
        "x": {"outcome": "failed", "executed": True, "opset": "iOS17", "ops": ["crop_resize"], "precision": "fp32"},
        "y": {"outcome": "skipped", "reason": "TensorFlow 2.x not found.", "precision": "fp32"},
        "z": {"outcome": "passed", "executed": True, "opset": "iOS15", "ops": ["add"], "precision": "fp16"}}}
    (tmp_path / "run.json").write_text(json.dumps(first))
    progress = [{"case": "x", "outcome": "xfailed", "reason": "suite erratum: ...", "precision": "fp32"},
                {"case": "y", "outcome": "passed", "executed": True, "opset": "iOS15", "ops": ["scatter"],
                 "precision": "fp32"}]
    (tmp_path / "rerun.progress.jsonl").write_text("".join(json.dumps(p) + "\n" for p in progress))
    merged = fast_slice.merge([tmp_path / "run.json", tmp_path / "rerun.progress.jsonl"])
    assert merged["totals"] == {"cases": 3, "executed": 2, "executed_passed": 2, "passed": 2, "xfailed": 1}
    assert merged["failed_by_op"] == {} and merged["skipped_by_reason"] == {}
    assert merged["xfailed_by_reason"] == {"suite erratum: ...": 1}


def test_merge_by_test_replaces_a_test_functions_cases_drawn_at_another_collection(tmp_path):
    """Parameters drawn at collection give a re-run other case ids: --by-test drops the first
    run's cases of every test function the re-run holds, and keeps the others."""
    first = {"cases": {
        "a.py::T::test_norm[axes=[0, 2]]": {"outcome": "failed", "executed": True, "opset": "iOS17",
                                            "ops": ["layer_norm"], "precision": "fp32"},
        "a.py::T::test_other[x=1]": {"outcome": "passed", "executed": True, "opset": "iOS17", "ops": ["add"],
                                     "precision": "fp32"}}}
    rerun = {"cases": {
        "a.py::T::test_norm[axes=[1]]": {"outcome": "passed", "executed": True, "opset": "iOS17",
                                         "ops": ["layer_norm"], "precision": "fp32"}}}
    (tmp_path / "run.json").write_text(json.dumps(first))
    (tmp_path / "rerun.json").write_text(json.dumps(rerun))
    by_id = fast_slice.merge([tmp_path / "run.json", tmp_path / "rerun.json"])
    assert by_id["totals"]["cases"] == 3 and by_id["failed_by_op"] == {"layer_norm": 1}
    by_test = fast_slice.merge([tmp_path / "run.json", tmp_path / "rerun.json"], by_test=True)
    assert sorted(by_test["cases"]) == ["a.py::T::test_norm[axes=[1]]", "a.py::T::test_other[x=1]"]
    assert by_test["totals"]["cases"] == 2 and by_test["failed_by_op"] == {}
