"""MIL text parser: Apple's `model.mil` parses to the package's program, blob references stay
references, and every error names the file, line and column."""

from __future__ import annotations

import pytest

from kiln.compile.compiler import DEFAULT_BUILD_INFO
from kiln.compile.errors import MilSyntaxError
from kiln.coreml.mil_text.build_info import build_info_entries
from kiln.coreml.mil_text.parser import parse_program
from kiln.coreml.mil_text.printer import print_program
from tests.coreml.mil_text.programs import GOOD, canonical, handmade_program, load_program
from tests.helpers.golden_bundles import GOLDEN_VARIANTS, require_golden


def test_golden_model_mil_parses_to_the_packages_program():
    root = require_golden()
    for variant in GOLDEN_VARIANTS:
        text = (root / variant / "apple-compiled.mlmodelc/model.mil").read_text()
        parsed = parse_program(text, file=f"{variant}/model.mil")
        program = canonical(load_program(root / variant / "input.mlpackage"))
        # the compiled text carries coremlc's buildInfo entries on top of the package's
        expected_info = build_info_entries(program.attributes.get("buildInfo"))
        expected_info.update(DEFAULT_BUILD_INFO)
        assert build_info_entries(parsed.attributes["buildInfo"]) == expected_info
        del parsed.attributes["buildInfo"]
        if "buildInfo" in program.attributes:
            del program.attributes["buildInfo"]
        assert parsed == program


def test_parsed_blob_reference_stays_a_blob_file_value():
    program = parse_program(print_program(handmade_program()))
    op = program.functions["main"].block_specializations["CoreML8"].operations[-1]
    blob = op.inputs["z"].arguments[0].value
    assert blob.WhichOneof("value") == "blobFileValue"
    assert (blob.blobFileValue.fileName, blob.blobFileValue.offset) == ("@model_path/weights/weight.bin", 128)


# --- parse errors ---------------------------------------------------------------------------


def test_good_text_parses():
    program = parse_program(GOOD)
    op = program.functions["main"].block_specializations["CoreML6"].operations[0]
    assert op.type == "relu" and op.inputs["x"].arguments[0].name == "x" and op.outputs[0].name == "y"


@pytest.mark.parametrize("broken, line, column, message", [
    (GOOD.replace("program(1.0)", "program(2.0)"), 1, 9, "MIL text version"),
    (GOOD.replace("<ios16>", "<ios99>"), 3, 15, "unknown opset 'ios99'"),
    (GOOD.replace("relu(x = x)", "relu(x = x"), 4, 45, "expected ','"),
    (GOOD.replace("fp32, [2]> y", "fq32, [2]> y"), 4, 20, "expected a data type"),
    (GOOD.replace("(y);", "(y)"), 6, 1, "expected ';'"),
    (GOOD.replace('("y")', '(1)'), 4, 73, "expected a string literal"),
    (GOOD.replace("tensor<fp32, [2]> y", "fp32 y"), 4, 13, "bare scalar types belong to program(1.3)"),
    (GOOD + "\nextra", 7, 1, "expected end of file"),
    (GOOD.replace("relu(", "relu(#"), 4, 40, "unexpected character '#'"),
])
def test_parse_errors_name_file_line_and_column(broken, line, column, message):
    with pytest.raises(MilSyntaxError) as caught:
        parse_program(broken, file="bundle/model.mil")
    error = caught.value
    assert (error.file, error.line, error.column) == ("bundle/model.mil", line, column), str(error)
    assert message in str(error)
    assert str(error).startswith(f"bundle/model.mil:{line}:{column}: ")


def test_parse_rejects_wrong_element_count_and_out_of_range_integers():
    text = GOOD.replace('[name = tensor<string, []>("y")]', "[k = tensor<int32, [3]>([1, 2])]")
    with pytest.raises(MilSyntaxError, match="2 elements but its shape holds 3"):
        parse_program(text)
    text = GOOD.replace('[name = tensor<string, []>("y")]', "[k = tensor<int8, [1]>([300])]")
    with pytest.raises(MilSyntaxError, match="300 out of range for int8"):
        parse_program(text)
