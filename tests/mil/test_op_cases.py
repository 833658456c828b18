"""kiln's own cases for the op types no case of coremltools' suite executes on kiln (tests/mil/op_cases.py),
with expectations worked out from the MIL spec; and the coverage file `kiln ops --coverage` reads from them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kiln.mil.coverage import KILN_OP_CASES, coverage

from .op_cases import CASES, coverage as case_coverage, mismatches, run_case

RUNS = [(case, opset, precision) for case in CASES for opset in case.opsets for precision in case.precisions]


@pytest.mark.parametrize("case, opset, precision", RUNS, ids=[c.case_id(o, p) for c, o, p in RUNS])
def test_op_case(case, opset, precision, tmp_path_factory):
    outputs, ops = run_case(case, opset, precision, tmp_path_factory.mktemp("op_cases"))
    assert case.op in ops
    assert not mismatches(case, precision, outputs), f"{case.spec}: {mismatches(case, precision, outputs)}"


def test_a_wrong_expectation_is_caught(tmp_path):
    ceil = next(c for c in CASES if c.name == "ceil")
    outputs, _ = run_case(ceil, "iOS15", "fp32", tmp_path)
    floor = [np.floor(ceil.inputs["x"])]
    assert mismatches(ceil.__class__(**{**ceil.__dict__, "expected": floor}), "fp32", outputs)
    label = next(c for c in CASES if c.name == "classify_strings")
    outputs, _ = run_case(label, "iOS17", "fp32", tmp_path)
    assert outputs[0] == "dog"
    assert mismatches(label.__class__(**{**label.__dict__, "expected": ["cat", label.expected[1]]}), "fp32", outputs)


def test_const_symbolic_as_coremltools_writes_it_is_a_named_error(tmp_path):
    """coremltools serializes _const_symbolic with no value: kiln names the op and what it lacks."""
    from kiln.mil import load_model
    from kiln.mil.errors import OpExecutionError

    from .op_cases import save_case

    case = next(c for c in CASES if c.name == "_const_symbolic")
    path = save_case(case.__class__(**{**case.__dict__, "edit": None}), "iOS17", tmp_path)
    with pytest.raises(OpExecutionError, match=r"op '_const_symbolic' \(opset iOS17\).*no 'val' attribute"):
        load_model(path).plan("fp32").run(case.inputs)


def test_the_coverage_file_lists_what_the_cases_execute(tmp_path, repo):
    """src/kiln/mil/kiln_op_cases.json is the cases' own measurement, and `kiln ops --coverage` counts
    the nine op types no conformance case executes as tested."""
    assert json.loads(KILN_OP_CASES.read_text()) == case_coverage(tmp_path)
    covered = coverage()
    for op in ("_const_symbolic", "ceil", "classify", "conv_quantized", "logical_and", "logical_not",
               "logical_or", "logical_xor", "non_maximum_suppression"):
        for opset in ("iOS15", "iOS16", "iOS17", "iOS18"):
            assert op in covered[opset].tested, (op, opset)
    kiln = str(Path(sys.executable).parent / "kiln")
    out = subprocess.run([kiln, "ops", "--coverage"], capture_output=True, text=True, cwd=repo, check=True).stdout
    assert "iOS15: 152/152 op types implemented" in out
    assert "crop_resize" in covered["iOS15"].tested    # besides its disagreement with Apple's runtime
    ios15 = out.split("iOS16:")[0]
    assert "  untested: (none)" in ios15
    assert "known disagreement with Apple's runtime: crop_resize (iOS15)" in ios15
