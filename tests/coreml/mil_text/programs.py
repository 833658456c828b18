"""Programs the MIL text tests print and parse: read from a package, canonicalised as the text
form keeps them, and one written directly as protobuf with the value kinds coremltools does not
emit."""

from __future__ import annotations

import numpy as np
from coremltools.proto import MIL_pb2, Model_pb2

DT = MIL_pb2.DataType


def load_program(package) -> MIL_pb2.Program:
    model = Model_pb2.Model()
    model.ParseFromString((package / "Data/com.apple.CoreML/model.mlmodel").read_bytes())
    return model.mlProgram


def canonical(program: MIL_pb2.Program) -> MIL_pb2.Program:
    """What survives the text form: function inputs are printed sorted by name (as Apple does)."""
    copy = MIL_pb2.Program()
    copy.CopyFrom(program)
    for function in copy.functions.values():
        ordered = sorted(function.inputs, key=lambda n: n.name)
        del function.inputs[:]
        function.inputs.extend(ordered)
    return copy


def tensor_type(dtype, dims):
    value_type = MIL_pb2.ValueType()
    value_type.tensorType.dataType = dtype
    value_type.tensorType.rank = len(dims)
    for dim in dims:
        if dim is None:
            value_type.tensorType.dimensions.add().unknown.variadic = False
        else:
            value_type.tensorType.dimensions.add().constant.size = dim
    return value_type


def immediate(dtype, dims, storage, values):
    value = MIL_pb2.Value(type=tensor_type(dtype, dims))
    field = getattr(value.immediateValue.tensor, storage)
    if storage == "bytes":
        field.values = values
    else:
        field.values.extend(values)
    return value


def const(block, name, value):
    op = block.operations.add(type="const")
    op.outputs.add(name=name).type.CopyFrom(value.type)
    op.attributes["val"].CopyFrom(value)
    op.attributes["name"].CopyFrom(immediate(DT.STRING, [], "strings", [name]))
    return op


def handmade_program() -> MIL_pb2.Program:
    program = MIL_pb2.Program(version=1)
    function = program.functions["main"]
    function.opset = "CoreML8"
    x = function.inputs.add(name="x")
    x.type.CopyFrom(tensor_type(DT.FLOAT32, [None, 4]))
    block = function.block_specializations["CoreML8"]
    const(block, "i64", immediate(DT.INT64, [2], "longInts", [-(2 ** 62), 7]))
    const(block, "u64", immediate(DT.UINT64, [], "longInts", [2 ** 40]))
    const(block, "f64", immediate(DT.FLOAT64, [2], "doubles", [1e300, -1.5]))
    const(block, "i4", immediate(DT.INT4, [3], "bytes", bytes([0xF8, 0x07])))  # -8, -1, 7
    const(block, "u1", immediate(DT.UINT1, [5], "bytes", bytes([0b10110])))
    const(block, "u3", immediate(DT.UINT3, [3], "bytes", bytes([0b10001111, 0b1])))
    const(block, "u6", immediate(DT.UINT6, [2], "bytes", bytes([0xFF, 0x0F])))
    const(block, "bf16", immediate(DT.BFLOAT16, [2], "bytes", np.array([0x3F80, 0xC040], "<u2").tobytes()))
    const(block, "e4m3", immediate(DT.FLOAT8E4M3FN, [3], "bytes", bytes([0x38, 0xC0, 0x7F])))
    const(block, "e5m2", immediate(DT.FLOAT8E5M2, [2], "bytes", bytes([0x3C, 0xFC])))
    const(block, "empty", immediate(DT.INT32, [0], "ints", []))
    # list / tuple / dictionary values
    element = tensor_type(DT.INT32, [2])
    list_value = MIL_pb2.Value()
    list_value.type.listType.type.CopyFrom(element)
    list_value.type.listType.length.constant.size = 2
    for pair in ([0, 4], [1, 8]):
        list_value.immediateValue.list.values.add().CopyFrom(immediate(DT.INT32, [2], "ints", pair))
    const(block, "a_list", list_value)
    tuple_value = MIL_pb2.Value()
    tuple_value.type.tupleType.types.add().CopyFrom(tensor_type(DT.STRING, []))
    tuple_value.type.tupleType.types.add().CopyFrom(list_value.type)
    tuple_value.immediateValue.tuple.values.add().CopyFrom(immediate(DT.STRING, [], "strings", ["RangeDims"]))
    tuple_value.immediateValue.tuple.values.add().CopyFrom(list_value)
    dict_value = MIL_pb2.Value()
    dict_value.type.dictionaryType.keyType.CopyFrom(tensor_type(DT.STRING, []))
    dict_value.type.dictionaryType.valueType.CopyFrom(tuple_value.type)
    entry = dict_value.immediateValue.dictionary.values.add()
    entry.key.CopyFrom(immediate(DT.STRING, [], "strings", ["x"]))
    entry.value.CopyFrom(tuple_value)
    function.attributes["FlexibleShapeInformation"].CopyFrom(dict_value)
    # an operation with an inline (immediate) input and a blob-file input
    op = block.operations.add(type="mul")
    op.inputs["x"].arguments.add(name="x")
    op.inputs["y"].arguments.add().value.CopyFrom(immediate(DT.FLOAT32, [4], "floats", [1.0, 0.5, -0.25, 3.0]))
    blob = MIL_pb2.Value(type=tensor_type(DT.FLOAT16, [4]))
    blob.blobFileValue.fileName = "@model_path/weights/weight.bin"
    blob.blobFileValue.offset = 128
    op.inputs["z"].arguments.add().value.CopyFrom(blob)
    op.outputs.add(name="y").type.CopyFrom(tensor_type(DT.FLOAT32, [None, 4]))
    block.outputs.append("y")
    return program


GOOD = """program(1.0)
{
    func main<ios16>(tensor<fp32, [2]> x) {
            tensor<fp32, [2]> y = relu(x = x)[name = tensor<string, []>("y")];
        } -> (y);
}"""
