"""MIL text printer and parser together: exact golden text, both dialects, every value kind, nested
blocks, and parse(print(p)) == p."""

from __future__ import annotations

import pytest

from kiln.coreml.mil_text.parser import parse_program
from kiln.coreml.mil_text.printer import print_program
from tests.coreml.mil_text.programs import canonical, handmade_program, load_program
from tests.helpers.golden_bundles import GOLDEN_VARIANTS, require_golden


@pytest.mark.parametrize("variant", GOLDEN_VARIANTS)
@pytest.mark.parametrize("dialect", ["1.0", "1.3"])
def test_golden_programs_round_trip(variant, dialect):
    program = load_program(require_golden() / variant / "input.mlpackage")
    text = print_program(program, dialect=dialect)
    assert text.startswith(f"program({dialect})\n") and not text.endswith("\n")
    assert parse_program(text) == canonical(program)
    # printing the parsed program gives the same text back
    assert print_program(parse_program(text), dialect=dialect) == text


def test_builder_program_with_many_value_kinds_round_trips(value_kinds_package):
    program = load_program(value_kinds_package)
    for dialect in ("1.0", "1.3"):
        text = print_program(program, dialect=dialect)
        assert parse_program(text) == canonical(program)
    text = print_program(program)
    assert 'val = tensor<string, []>("he said \\"hi\\"\\n\\ttab\\\\ ünï")' in text
    assert "tensor<bool, [3]>([true, false, true])" in text
    assert "tensor<int8, [3]>([-128, 0, 127])" in text
    assert "tensor<uint32, [2]>([4294967295, 3])" in text
    assert "tensor<fp16, [5]>([0x1.998p-4, -0x1.4p+1, 0x1p-24, 0x1.ffcp+15, -0x0p+0])" in text
    assert "tensor<fp32, [2, 2]>([0x1p+0, -0x1p+1, inf, -inf])" in text
    assert "values = (x, add_0)" in text  # a variadic input binds several names
    assert "cond(pred = " in text and "while_loop(loop_vars = (" in text
    assert "                block(tensor<int32, []> " in text  # while_loop blocks take block inputs


@pytest.mark.parametrize("kind", ["int8_ios16", "int4_ios18", "palette4_ios18"])
def test_compressed_programs_round_trip(compressed_packages, kind):
    program = load_program(compressed_packages[kind])
    assert parse_program(print_program(program)) == canonical(program)


def test_handmade_program_with_every_value_kind_round_trips():
    program = handmade_program()
    for dialect in ("1.0", "1.3"):
        assert parse_program(print_program(program, dialect=dialect)) == program
    text = print_program(program, dialect="1.3")
    assert "tensor<int4, [3]>([-8, -1, 7])" in text
    assert "tensor<uint1, [5]>([0, 1, 1, 0, 1])" in text
    assert "tensor<uint3, [3]>([7, 1, 6])" in text
    assert "tensor<bf16, [2]>([0x1p+0, -0x1.8p+1])" in text
    assert "tensor<fp8e4m3fn, [3]>([0x1p+0, -0x1p+1, nan])" in text
    assert "tensor<fp8e5m2, [2]>([0x1p+0, -inf])" in text
    assert "tensor<int32, [0]>([])" in text
    assert "uint64 u64 = const()" in text and "uint64(1099511627776)" in text
    assert "tensor<fp32, [?, 4]> x" in text
    assert ('func main<ios18>(tensor<fp32, [?, 4]> x) [FlexibleShapeInformation = '
            'dict<string, tuple<string, list<tensor<int32, [2]>, 2>>>({{"x", ("RangeDims", [[0, 4], [1, 8]])}})] {') in text
    assert "y = tensor<fp32, [4]>([0x1p+0, 0x1p-1, -0x1p-2, 0x1.8p+1])" in text
    assert 'z = tensor<fp16, [4]>(BLOBFILE(path = string("@model_path/weights/weight.bin"), offset = uint64(128)))' in text
