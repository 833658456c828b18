"""MIL text printer: C99 hex floats, the 1.3 dialect's bare scalar types, and typed errors for what
has no text form."""

from __future__ import annotations

import math

import pytest

from kiln.compile.errors import UnsupportedValueError
from kiln.coreml.mil_text.printer import hex_float, print_program
from tests.coreml.mil_text.programs import handmade_program, load_program
from tests.helpers.golden_bundles import require_golden


@pytest.mark.parametrize("value, text", [
    (0.0, "0x0p+0"), (-0.0, "-0x0p+0"), (1.0, "0x1p+0"), (2.0, "0x1p+1"), (10000.0, "0x1.388p+13"),
    (2.0 ** -24, "0x1p-24"), (0.1, "0x1.999999999999ap-4"), (-2.5, "-0x1.4p+1"),
    (math.inf, "inf"), (-math.inf, "-inf"), (math.nan, "nan"),
])
def test_hex_float_matches_c99_percent_a(value, text):
    assert hex_float(value) == text


def test_dialect_1_3_prints_bare_scalar_types():
    program = load_program(require_golden() / "unified" / "input.mlpackage")
    text = print_program(program, dialect="1.3", build_info={"coremlc-version": "3505.1.1"})
    assert "[buildInfo = dict<string, string>({{" in text
    assert 'string x_1_mode_0 = const()[name = string("x_1_mode_0"), val = string("reflect")];' in text
    assert 'BLOBFILE(path = string("@model_path/weights/weight.bin"), offset = uint64(64))' in text
    assert "func main<ios15>(" in text
    assert "tensor<string, []>" not in text


def test_value_of_unknown_kind_is_a_typed_error():
    program = handmade_program()
    block = program.functions["main"].block_specializations["CoreML8"]
    block.operations[0].attributes["val"].ClearField("immediateValue")
    with pytest.raises(UnsupportedValueError, match="operation 'i64'.*neither an immediate value nor a blob"):
        print_program(program)


def test_value_without_a_type_is_a_typed_error():
    program = handmade_program()
    block = program.functions["main"].block_specializations["CoreML8"]
    block.operations[1].attributes["val"].ClearField("type")
    with pytest.raises(UnsupportedValueError, match="operation 'u64'.*type is not set"):
        print_program(program)


def test_unknown_data_type_and_bad_element_count_are_typed_errors():
    program = handmade_program()
    block = program.functions["main"].block_specializations["CoreML8"]
    block.operations[0].attributes["val"].type.tensorType.dataType = 99
    with pytest.raises(UnsupportedValueError, match="unknown MIL data type code 99"):
        print_program(program)
    program = handmade_program()
    block = program.functions["main"].block_specializations["CoreML8"]
    block.operations[2].attributes["val"].immediateValue.tensor.doubles.values.append(1.0)
    with pytest.raises(UnsupportedValueError, match="holds 3 elements but its type tensor<fp64, \\[2\\]> needs 2"):
        print_program(program)


def test_name_that_is_not_an_identifier_is_refused():
    program = handmade_program()
    program.functions["main"].block_specializations["CoreML8"].outputs[0] = "y out"
    with pytest.raises(UnsupportedValueError, match="'y out' is not a MIL identifier"):
        print_program(program)
