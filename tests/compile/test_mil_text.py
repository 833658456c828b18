"""MIL text printer and parser: exact golden text, both dialects, every value kind, nested blocks,
and parse(print(p)) == p."""

from __future__ import annotations

import math

import numpy as np
import pytest
from coremltools.proto import MIL_pb2, Model_pb2

from kiln.compile.errors import MilSyntaxError, UnsupportedValueError
from kiln.compile.compiler import DEFAULT_BUILD_INFO
from kiln.coreml.mil_text import build_info_entries, hex_float, parse_program, print_program, tokenize

from compile_golden import GOLDEN_VARIANTS, require_golden

DT = MIL_pb2.DataType


def _load_program(package) -> MIL_pb2.Program:
    model = Model_pb2.Model()
    model.ParseFromString((package / "Data/com.apple.CoreML/model.mlmodel").read_bytes())
    return model.mlProgram


def _canonical(program: MIL_pb2.Program) -> MIL_pb2.Program:
    """What survives the text form: function inputs are printed sorted by name (as Apple does)."""
    copy = MIL_pb2.Program()
    copy.CopyFrom(program)
    for function in copy.functions.values():
        ordered = sorted(function.inputs, key=lambda n: n.name)
        del function.inputs[:]
        function.inputs.extend(ordered)
    return copy


@pytest.mark.parametrize("value, text", [
    (0.0, "0x0p+0"), (-0.0, "-0x0p+0"), (1.0, "0x1p+0"), (2.0, "0x1p+1"), (10000.0, "0x1.388p+13"),
    (2.0 ** -24, "0x1p-24"), (0.1, "0x1.999999999999ap-4"), (-2.5, "-0x1.4p+1"),
    (math.inf, "inf"), (-math.inf, "-inf"), (math.nan, "nan"),
])
def test_hex_float_matches_c99_percent_a(value, text):
    assert hex_float(value) == text


@pytest.mark.parametrize("variant", GOLDEN_VARIANTS)
@pytest.mark.parametrize("dialect", ["1.0", "1.3"])
def test_golden_programs_round_trip(variant, dialect):
    program = _load_program(require_golden() / variant / "input.mlpackage")
    text = print_program(program, dialect=dialect)
    assert text.startswith(f"program({dialect})\n") and not text.endswith("\n")
    assert parse_program(text) == _canonical(program)
    # printing the parsed program gives the same text back
    assert print_program(parse_program(text), dialect=dialect) == text


def test_golden_model_mil_parses_to_the_packages_program():
    root = require_golden()
    for variant in GOLDEN_VARIANTS:
        text = (root / variant / "apple-compiled.mlmodelc/model.mil").read_text()
        parsed = parse_program(text, file=f"{variant}/model.mil")
        program = _canonical(_load_program(root / variant / "input.mlpackage"))
        # the compiled text carries coremlc's buildInfo entries on top of the package's
        expected_info = build_info_entries(program.attributes.get("buildInfo"))
        expected_info.update(DEFAULT_BUILD_INFO)
        assert build_info_entries(parsed.attributes["buildInfo"]) == expected_info
        del parsed.attributes["buildInfo"]
        if "buildInfo" in program.attributes:
            del program.attributes["buildInfo"]
        assert parsed == program


def test_dialect_1_3_prints_bare_scalar_types():
    program = _load_program(require_golden() / "unified" / "input.mlpackage")
    text = print_program(program, dialect="1.3", build_info={"coremlc-version": "3505.1.1"})
    assert "[buildInfo = dict<string, string>({{" in text
    assert 'string x_1_mode_0 = const()[name = string("x_1_mode_0"), val = string("reflect")];' in text
    assert 'BLOBFILE(path = string("@model_path/weights/weight.bin"), offset = uint64(64))' in text
    assert "func main<ios15>(" in text
    assert "tensor<string, []>" not in text


def test_builder_program_with_many_value_kinds_round_trips(value_kinds_package):
    program = _load_program(value_kinds_package)
    for dialect in ("1.0", "1.3"):
        text = print_program(program, dialect=dialect)
        assert parse_program(text) == _canonical(program)
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
    program = _load_program(compressed_packages[kind])
    assert parse_program(print_program(program)) == _canonical(program)


# --- programs written directly as protobuf: value kinds coremltools does not emit -------------


def _tensor_type(dtype, dims):
    value_type = MIL_pb2.ValueType()
    value_type.tensorType.dataType = dtype
    value_type.tensorType.rank = len(dims)
    for dim in dims:
        if dim is None:
            value_type.tensorType.dimensions.add().unknown.variadic = False
        else:
            value_type.tensorType.dimensions.add().constant.size = dim
    return value_type


def _immediate(dtype, dims, storage, values):
    value = MIL_pb2.Value(type=_tensor_type(dtype, dims))
    field = getattr(value.immediateValue.tensor, storage)
    if storage == "bytes":
        field.values = values
    else:
        field.values.extend(values)
    return value


def _const(block, name, value):
    op = block.operations.add(type="const")
    op.outputs.add(name=name).type.CopyFrom(value.type)
    op.attributes["val"].CopyFrom(value)
    op.attributes["name"].CopyFrom(_immediate(DT.STRING, [], "strings", [name]))
    return op


def _handmade_program() -> MIL_pb2.Program:
    program = MIL_pb2.Program(version=1)
    function = program.functions["main"]
    function.opset = "CoreML8"
    x = function.inputs.add(name="x")
    x.type.CopyFrom(_tensor_type(DT.FLOAT32, [None, 4]))
    block = function.block_specializations["CoreML8"]
    _const(block, "i64", _immediate(DT.INT64, [2], "longInts", [-(2 ** 62), 7]))
    _const(block, "u64", _immediate(DT.UINT64, [], "longInts", [2 ** 40]))
    _const(block, "f64", _immediate(DT.FLOAT64, [2], "doubles", [1e300, -1.5]))
    _const(block, "i4", _immediate(DT.INT4, [3], "bytes", bytes([0xF8, 0x07])))  # -8, -1, 7
    _const(block, "u1", _immediate(DT.UINT1, [5], "bytes", bytes([0b10110])))
    _const(block, "u3", _immediate(DT.UINT3, [3], "bytes", bytes([0b10001111, 0b1])))
    _const(block, "u6", _immediate(DT.UINT6, [2], "bytes", bytes([0xFF, 0x0F])))
    _const(block, "bf16", _immediate(DT.BFLOAT16, [2], "bytes", np.array([0x3F80, 0xC040], "<u2").tobytes()))
    _const(block, "e4m3", _immediate(DT.FLOAT8E4M3FN, [3], "bytes", bytes([0x38, 0xC0, 0x7F])))
    _const(block, "e5m2", _immediate(DT.FLOAT8E5M2, [2], "bytes", bytes([0x3C, 0xFC])))
    _const(block, "empty", _immediate(DT.INT32, [0], "ints", []))
    # list / tuple / dictionary values
    element = _tensor_type(DT.INT32, [2])
    list_value = MIL_pb2.Value()
    list_value.type.listType.type.CopyFrom(element)
    list_value.type.listType.length.constant.size = 2
    for pair in ([0, 4], [1, 8]):
        list_value.immediateValue.list.values.add().CopyFrom(_immediate(DT.INT32, [2], "ints", pair))
    _const(block, "a_list", list_value)
    tuple_value = MIL_pb2.Value()
    tuple_value.type.tupleType.types.add().CopyFrom(_tensor_type(DT.STRING, []))
    tuple_value.type.tupleType.types.add().CopyFrom(list_value.type)
    tuple_value.immediateValue.tuple.values.add().CopyFrom(_immediate(DT.STRING, [], "strings", ["RangeDims"]))
    tuple_value.immediateValue.tuple.values.add().CopyFrom(list_value)
    dict_value = MIL_pb2.Value()
    dict_value.type.dictionaryType.keyType.CopyFrom(_tensor_type(DT.STRING, []))
    dict_value.type.dictionaryType.valueType.CopyFrom(tuple_value.type)
    entry = dict_value.immediateValue.dictionary.values.add()
    entry.key.CopyFrom(_immediate(DT.STRING, [], "strings", ["x"]))
    entry.value.CopyFrom(tuple_value)
    function.attributes["FlexibleShapeInformation"].CopyFrom(dict_value)
    # an operation with an inline (immediate) input and a blob-file input
    op = block.operations.add(type="mul")
    op.inputs["x"].arguments.add(name="x")
    op.inputs["y"].arguments.add().value.CopyFrom(_immediate(DT.FLOAT32, [4], "floats", [1.0, 0.5, -0.25, 3.0]))
    blob = MIL_pb2.Value(type=_tensor_type(DT.FLOAT16, [4]))
    blob.blobFileValue.fileName = "@model_path/weights/weight.bin"
    blob.blobFileValue.offset = 128
    op.inputs["z"].arguments.add().value.CopyFrom(blob)
    op.outputs.add(name="y").type.CopyFrom(_tensor_type(DT.FLOAT32, [None, 4]))
    block.outputs.append("y")
    return program


def test_handmade_program_with_every_value_kind_round_trips():
    program = _handmade_program()
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


def test_parsed_blob_reference_stays_a_blob_file_value():
    program = parse_program(print_program(_handmade_program()))
    op = program.functions["main"].block_specializations["CoreML8"].operations[-1]
    blob = op.inputs["z"].arguments[0].value
    assert blob.WhichOneof("value") == "blobFileValue"
    assert (blob.blobFileValue.fileName, blob.blobFileValue.offset) == ("@model_path/weights/weight.bin", 128)


def test_value_of_unknown_kind_is_a_typed_error():
    program = _handmade_program()
    block = program.functions["main"].block_specializations["CoreML8"]
    block.operations[0].attributes["val"].ClearField("immediateValue")
    with pytest.raises(UnsupportedValueError, match="operation 'i64'.*neither an immediate value nor a blob"):
        print_program(program)


def test_value_without_a_type_is_a_typed_error():
    program = _handmade_program()
    block = program.functions["main"].block_specializations["CoreML8"]
    block.operations[1].attributes["val"].ClearField("type")
    with pytest.raises(UnsupportedValueError, match="operation 'u64'.*type is not set"):
        print_program(program)


def test_unknown_data_type_and_bad_element_count_are_typed_errors():
    program = _handmade_program()
    block = program.functions["main"].block_specializations["CoreML8"]
    block.operations[0].attributes["val"].type.tensorType.dataType = 99
    with pytest.raises(UnsupportedValueError, match="unknown MIL data type code 99"):
        print_program(program)
    program = _handmade_program()
    block = program.functions["main"].block_specializations["CoreML8"]
    block.operations[2].attributes["val"].immediateValue.tensor.doubles.values.append(1.0)
    with pytest.raises(UnsupportedValueError, match="holds 3 elements but its type tensor<fp64, \\[2\\]> needs 2"):
        print_program(program)


def test_name_that_is_not_an_identifier_is_refused():
    program = _handmade_program()
    program.functions["main"].block_specializations["CoreML8"].outputs[0] = "y out"
    with pytest.raises(UnsupportedValueError, match="'y out' is not a MIL identifier"):
        print_program(program)


# --- parse errors ---------------------------------------------------------------------------

GOOD = """program(1.0)
{
    func main<ios16>(tensor<fp32, [2]> x) {
            tensor<fp32, [2]> y = relu(x = x)[name = tensor<string, []>("y")];
        } -> (y);
}"""


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


def test_tokenizer_keeps_offsets_and_skips_comments():
    tokens = tokenize("a // note\n -0x1p+1 ...")
    assert [(t.kind, t.text, t.offset) for t in tokens] == [
        ("IDENT", "a", 0), ("NUMBER", "-0x1p+1", 11), ("PUNCT", "...", 19), ("END", "", 22)]
