"""MIL text printer: a MILSpec `Program` protobuf as `model.mil` text, in either dialect (see
:mod:`kiln.coreml.mil_text` for the layout)."""

from __future__ import annotations

import math
import re

from kiln.coreml.proto import MIL_pb2

from kiln.coreml.dtypes import FLOAT_DTYPES, decode_elements, dtype_text
from kiln.coreml.errors import UnsupportedValueError
from kiln.coreml.mil_text.build_info import merged_build_info
from kiln.coreml.mil_text.grammar import (
    BLOB_OFFSET_KEY,
    BLOB_PATH_KEY,
    DIALECTS,
    OPSET_TEXT,
    byte_order,
    element_count,
)

DataType = MIL_pb2.DataType

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def hex_float(value: float) -> str:
    """C99 ``%a`` as Apple prints it: ``0x1.388p+13``, ``0x0p+0``, ``-0x1p-24``, ``inf``, ``nan``."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    mantissa, exponent = value.hex().split("p")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}p{exponent}"


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f\x7f"\\]')


def quote_string(text: str) -> str:
    if not _NEEDS_ESCAPE.search(text):  # the common case: names and dtype strings
        return f'"{text}"'
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


class _Printer:
    def __init__(self, dialect: str):
        if dialect not in DIALECTS:
            raise ValueError(f"unknown MIL text dialect {dialect!r}; expected one of {DIALECTS}")
        self.dialect = dialect
        self.bare_scalars = dialect != "1.0"
        self.string_scalar = "string" if self.bare_scalars else "tensor<string, []>"
        self.uint64_scalar = "uint64" if self.bare_scalars else "tensor<uint64, []>"
        self._type_cache: dict[bytes, str] = {}

    # types ------------------------------------------------------------------------------------

    def dimension(self, dim: MIL_pb2.Dimension, where: str) -> str:
        kind = dim.WhichOneof("dimension")
        if kind == "constant":
            return str(dim.constant.size)
        if kind == "unknown":
            return "..." if dim.unknown.variadic else "?"
        raise UnsupportedValueError("dimension with neither a size nor 'unknown'", where)

    def type(self, value_type: MIL_pb2.ValueType, where: str) -> str:
        # Types repeat a lot (every op output); cache by serialized form.
        key = value_type.SerializeToString()
        text = self._type_cache.get(key)
        if text is None:
            text = self._type_cache[key] = self._type_uncached(value_type, where)
        return text

    def _type_uncached(self, value_type: MIL_pb2.ValueType, where: str) -> str:
        kind = value_type.WhichOneof("type")
        if kind == "tensorType":
            tensor = value_type.tensorType
            if tensor.attributes:
                raise UnsupportedValueError("tensor type attributes have no MIL text form", where)
            dtype = dtype_text(tensor.dataType, where)
            if not tensor.dimensions and self.bare_scalars:
                return dtype
            dims = ", ".join(self.dimension(d, where) for d in tensor.dimensions)
            return f"tensor<{dtype}, [{dims}]>"
        if kind == "listType":
            length = value_type.listType.length
            length_text = self.dimension(length, where) if length.WhichOneof("dimension") else "?"
            return f"list<{self.type(value_type.listType.type, where)}, {length_text}>"
        if kind == "tupleType":
            return "tuple<" + ", ".join(self.type(t, where) for t in value_type.tupleType.types) + ">"
        if kind == "dictionaryType":
            dictionary = value_type.dictionaryType
            return f"dict<{self.type(dictionary.keyType, where)}, {self.type(dictionary.valueType, where)}>"
        if kind == "stateType":
            return f"state<{self.type(value_type.stateType.wrappedType, where)}>"
        raise UnsupportedValueError("value type is not set (no tensor/list/tuple/dict/state)", where)

    # values -----------------------------------------------------------------------------------

    def value(self, value: MIL_pb2.Value, where: str) -> str:
        return f"{self.type(value.type, where)}({self.value_body(value, where)})"

    def blob(self, blob: MIL_pb2.Value.BlobFileValue) -> str:
        return (
            f"BLOBFILE({BLOB_PATH_KEY} = {self.string_scalar}({quote_string(blob.fileName)}), "
            f"{BLOB_OFFSET_KEY} = {self.uint64_scalar}({blob.offset}))"
        )

    def value_body(self, value: MIL_pb2.Value, where: str) -> str:
        kind = value.WhichOneof("value")
        if kind == "blobFileValue":
            return self.blob(value.blobFileValue)
        if kind != "immediateValue":
            raise UnsupportedValueError("value holds neither an immediate value nor a blob file reference", where)
        immediate = value.immediateValue
        which = immediate.WhichOneof("value")
        value_type = value.type
        if which == "tensor":
            if value_type.WhichOneof("type") != "tensorType":
                raise UnsupportedValueError("tensor value whose type is not a tensor type", where)
            return self.tensor_body(immediate.tensor, value_type.tensorType, where)
        if which == "list":
            return "[" + ", ".join(self.value_body(v, where) for v in immediate.list.values) + "]"
        if which == "tuple":
            return "(" + ", ".join(self.value_body(v, where) for v in immediate.tuple.values) + ")"
        if which == "dictionary":
            pairs = (
                "{" + self.value_body(pair.key, where) + ", " + self.value_body(pair.value, where) + "}"
                for pair in immediate.dictionary.values
            )
            return "{" + ", ".join(pairs) + "}"
        raise UnsupportedValueError("immediate value of no known kind (tensor/list/tuple/dictionary)", where)

    def tensor_body(self, tensor: MIL_pb2.TensorValue, tensor_type: MIL_pb2.TensorType, where: str) -> str:
        dtype = tensor_type.dataType
        count = element_count(tensor_type)
        elements = decode_elements(tensor, dtype, count, where)
        if count is not None and len(elements) != count:
            raise UnsupportedValueError(
                f"tensor holds {len(elements)} elements but its type {self.type_of_tensor(tensor_type, where)} needs {count}",
                where,
            )
        if dtype in FLOAT_DTYPES:
            texts = [hex_float(v) for v in elements]
        elif dtype == DataType.BOOL:
            texts = ["true" if v else "false" for v in elements]
        elif dtype == DataType.STRING:
            texts = [quote_string(v) for v in elements]
        else:
            texts = [str(v) for v in elements]
        if not tensor_type.dimensions:
            if len(texts) != 1:
                raise UnsupportedValueError(f"scalar tensor holds {len(texts)} elements", where)
            return texts[0]
        return "[" + ", ".join(texts) + "]"

    def type_of_tensor(self, tensor_type: MIL_pb2.TensorType, where: str) -> str:
        return self.type(MIL_pb2.ValueType(tensorType=tensor_type), where)

    # structure --------------------------------------------------------------------------------

    def name(self, name: str, where: str) -> str:
        if not _IDENTIFIER.match(name):
            raise UnsupportedValueError(f"{name!r} is not a MIL identifier", where)
        return name

    def attributes(self, attributes, where: str) -> str:
        if not attributes:
            return ""
        items = (f"{self.name(k, where)} = {self.value(attributes[k], f'{where}, attribute {k}')}"
                 for k in sorted(attributes, key=byte_order))
        return "[" + ", ".join(items) + "]"

    def typed_names(self, named_types, where: str) -> str:
        return ", ".join(f"{self.type(n.type, where)} {self.name(n.name, where)}" for n in named_types)

    def argument(self, argument: MIL_pb2.Argument, where: str) -> str:
        texts = []
        for binding in argument.arguments:
            kind = binding.WhichOneof("binding")
            if kind == "name":
                texts.append(self.name(binding.name, where))
            elif kind == "value":
                texts.append(self.value(binding.value, where))
            else:
                raise UnsupportedValueError("argument binding with neither a name nor a value", where)
        if len(texts) == 1:
            return texts[0]
        return "(" + ", ".join(texts) + ")"

    def operation(self, op: MIL_pb2.Operation, indent: int, lines: list[str]) -> None:
        label = op.outputs[0].name if op.outputs else op.type
        where = f"operation '{label}' ({op.type})"
        pad = " " * indent
        inputs = ", ".join(
            f"{self.name(k, where)} = {self.argument(op.inputs[k], f'{where}, input {k}')}"
            for k in sorted(op.inputs, key=byte_order)
        )
        head = f"{self.name(op.type, where)}({inputs}){self.attributes(op.attributes, where)}"
        if op.outputs:
            head = f"{self.typed_names(op.outputs, where)} = {head}"
        if not op.blocks:
            lines.append(f"{pad}{head};")
            return
        lines.append(f"{pad}{head} {{")
        for block in op.blocks:
            header = f"block({self.typed_names(block.inputs, where)}){self._spaced(self.attributes(block.attributes, where))}"
            self.block(block, header, indent + 4, lines, where)
        lines.append(f"{pad}}};")

    @staticmethod
    def _spaced(text: str) -> str:
        return f" {text}" if text else ""

    def block(self, block: MIL_pb2.Block, header: str, indent: int, lines: list[str], where: str) -> None:
        """``header {`` at `indent`, operations at `indent + 8`, ``} -> (outputs);`` at `indent + 4`."""
        lines.append(f"{' ' * indent}{header} {{")
        for op in block.operations:
            self.operation(op, indent + 8, lines)
        outputs = ", ".join(self.name(n, where) for n in block.outputs)
        lines.append(f"{' ' * (indent + 4)}}} -> ({outputs});")

    def function(self, name: str, function: MIL_pb2.Function, lines: list[str]) -> None:
        where = f"function '{name}'"
        opset = OPSET_TEXT.get(function.opset)
        if opset is None:
            raise UnsupportedValueError(f"unknown opset {function.opset!r}", where)
        if function.opset not in function.block_specializations:
            raise UnsupportedValueError(f"no block for its opset {function.opset!r}", where)
        inputs = sorted(function.inputs, key=lambda n: byte_order(n.name))
        header = (
            f"func {self.name(name, where)}<{opset}>({self.typed_names(inputs, where)})"
            f"{self._spaced(self.attributes(function.attributes, where))}"
        )
        self.block(function.block_specializations[function.opset], header, 4, lines, where)

    def program(self, program: MIL_pb2.Program, build_info: dict[str, str] | None) -> str:
        lines = [f"program({self.dialect})"]
        attributes = dict(program.attributes)
        if build_info is not None:
            attributes["buildInfo"] = merged_build_info(attributes.get("buildInfo"), build_info)
        if attributes:
            lines.append(self.attributes(attributes, "program"))
        lines.append("{")
        for name in sorted(program.functions, key=byte_order):
            self.function(name, program.functions[name], lines)
        lines.append("}")
        return "\n".join(lines)


def print_program(program: MIL_pb2.Program, *, dialect: str = "1.0", build_info: dict[str, str] | None = None) -> str:
    """`program` as MIL text. `build_info` entries are merged into the program's ``buildInfo``
    attribute (as `coremlc` adds its own version strings); None prints the attributes as they are."""
    return _Printer(dialect).program(program, build_info)
