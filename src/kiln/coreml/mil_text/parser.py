"""MIL text parser: `model.mil` text (either dialect) back to a MILSpec `Program` protobuf; errors
name the file, line and column."""

from __future__ import annotations

import bisect
import math
import re

from kiln.coreml.proto import MIL_pb2

from kiln.coreml.dtypes import DTYPE_FROM_TEXT, DTYPE_TEXT, FLOAT_DTYPES, INT_DTYPES, decode_elements, encode_elements
from kiln.coreml.errors import MilSyntaxError, UnsupportedValueError
from kiln.coreml.mil_text.grammar import BLOB_OFFSET_KEY, BLOB_PATH_KEY, DIALECTS, OPSET_FROM_TEXT, element_count
from kiln.coreml.mil_text.tokenizer import Token, gc_paused, tokenize

DataType = MIL_pb2.DataType

_UNESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r", "0": "\0"}


class _Parser:
    def __init__(self, text: str, file: str):
        self.text = text
        self.file = file
        self.tokens = tokenize(text, file)
        self.index = 0
        self._line_starts: list[int] | None = None

    # token helpers ----------------------------------------------------------------------------

    def error(self, message: str, token: Token | None = None) -> MilSyntaxError:
        token = token or self.tokens[self.index]
        if self._line_starts is None:
            self._line_starts = [0] + [m.end() for m in re.finditer("\n", self.text)]
        line = bisect.bisect_right(self._line_starts, token.offset)
        column = token.offset - self._line_starts[line - 1] + 1
        found = repr(token.text) if token.kind != "END" else "end of file"
        return MilSyntaxError(f"{message} (found {found})", self.file, line, column)

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def peek(self, ahead: int = 1) -> Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def at(self, text: str) -> bool:
        token = self.tokens[self.index]
        return token.text == text and token.kind in ("PUNCT", "IDENT")

    def accept(self, text: str) -> bool:
        if self.at(text):
            self.index += 1
            return True
        return False

    def expect(self, text: str) -> Token:
        token = self.tokens[self.index]
        if token.text != text or token.kind not in ("PUNCT", "IDENT"):
            raise self.error(f"expected '{text}'")
        self.index += 1
        return token

    def identifier(self, what: str) -> str:
        token = self.tokens[self.index]
        if token.kind != "IDENT":
            raise self.error(f"expected {what}")
        self.index += 1
        return token.text

    def comma_list(self, close: str, item) -> list:
        items = []
        if self.accept(close):
            return items
        while True:
            items.append(item())
            if self.accept(close):
                return items
            self.expect(",")

    # program structure ------------------------------------------------------------------------

    def program(self) -> MIL_pb2.Program:
        self.expect("program")
        self.expect("(")
        version = self.current
        if version.kind != "NUMBER" or version.text not in DIALECTS:
            raise self.error(f"expected a MIL text version, one of {', '.join(DIALECTS)}")
        self.index += 1
        self.dialect = version.text
        self.expect(")")
        program = MIL_pb2.Program(version=1)
        if self.at("["):
            for key, value in self.attribute_list():
                program.attributes[key].CopyFrom(value)
        self.expect("{")
        while not self.accept("}"):
            name, function = self.function()
            if name in program.functions:
                raise self.error(f"function '{name}' defined twice")
            program.functions[name].CopyFrom(function)
        if self.current.kind != "END":
            raise self.error("expected end of file after the program")
        return program

    def attribute_list(self) -> list[tuple[str, MIL_pb2.Value]]:
        self.expect("[")

        def attribute():
            key = self.identifier("an attribute name")
            self.expect("=")
            return key, self.value()

        pairs = self.comma_list("]", attribute)
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise self.error("an attribute is given twice")
        return pairs

    def typed_name(self) -> MIL_pb2.NamedValueType:
        value_type = self.type()
        return MIL_pb2.NamedValueType(name=self.identifier("a name"), type=value_type)

    def function(self) -> tuple[str, MIL_pb2.Function]:
        self.expect("func")
        name = self.identifier("a function name")
        self.expect("<")
        opset_token = self.current
        opset_text = self.identifier("an opset such as ios17")
        if opset_text not in OPSET_FROM_TEXT:
            raise self.error(f"unknown opset '{opset_text}'", opset_token)
        self.expect(">")
        function = MIL_pb2.Function(opset=OPSET_FROM_TEXT[opset_text])
        self.expect("(")
        function.inputs.extend(self.comma_list(")", self.typed_name))
        if self.at("["):
            for key, value in self.attribute_list():
                function.attributes[key].CopyFrom(value)
        block = MIL_pb2.Block()
        self.block_body(block)
        function.block_specializations[function.opset].CopyFrom(block)
        return name, function

    def block_body(self, block: MIL_pb2.Block) -> None:
        """``{ operations } -> (outputs);``"""
        self.expect("{")
        while not self.accept("}"):
            block.operations.append(self.operation())
        self.expect("->")
        self.expect("(")
        block.outputs.extend(self.comma_list(")", lambda: self.identifier("an output name")))
        self.expect(";")

    def operation(self) -> MIL_pb2.Operation:
        op = MIL_pb2.Operation()
        if not (self.current.kind == "IDENT" and self.peek().text == "("):
            op.outputs.extend([self.typed_name()])
            while self.accept(","):
                op.outputs.append(self.typed_name())
            self.expect("=")
        op.type = self.identifier("an operation type")
        self.expect("(")

        def named_input():
            key = self.identifier("an input name")
            self.expect("=")
            return key, self.argument()

        for key, argument in self.comma_list(")", named_input):
            if key in op.inputs:
                raise self.error(f"input '{key}' given twice")
            op.inputs[key].CopyFrom(argument)
        if self.at("["):
            for key, value in self.attribute_list():
                op.attributes[key].CopyFrom(value)
        if self.accept("{"):
            while not self.accept("}"):
                self.expect("block")
                block = op.blocks.add()
                self.expect("(")
                block.inputs.extend(self.comma_list(")", self.typed_name))
                if self.at("["):
                    for key, value in self.attribute_list():
                        block.attributes[key].CopyFrom(value)
                self.block_body(block)
        self.expect(";")
        return op

    def argument(self) -> MIL_pb2.Argument:
        argument = MIL_pb2.Argument()
        if self.accept("("):
            argument.arguments.extend(self.comma_list(")", self.binding))
        else:
            argument.arguments.append(self.binding())
        return argument

    def binding(self) -> MIL_pb2.Argument.Binding:
        token = self.current
        if token.kind == "IDENT" and self.peek().text not in ("<", "("):
            self.index += 1
            return MIL_pb2.Argument.Binding(name=token.text)
        return MIL_pb2.Argument.Binding(value=self.value())

    # types ------------------------------------------------------------------------------------

    def dimension(self) -> MIL_pb2.Dimension:
        token = self.current
        dim = MIL_pb2.Dimension()
        if token.kind == "NUMBER" and token.text.isdigit():
            dim.constant.size = int(token.text)
        elif token.text == "?":
            dim.unknown.variadic = False
        elif token.text == "...":
            dim.unknown.variadic = True
        else:
            raise self.error("expected a dimension (a size, '?' or '...')")
        self.index += 1
        return dim

    def dtype(self) -> int:
        token = self.current
        code = DTYPE_FROM_TEXT.get(token.text) if token.kind == "IDENT" else None
        if code is None:
            raise self.error("expected a data type such as fp32 or int32")
        self.index += 1
        return code

    def type(self) -> MIL_pb2.ValueType:
        token = self.current
        value_type = MIL_pb2.ValueType()
        if token.kind != "IDENT":
            raise self.error("expected a type")
        word = token.text
        if word == "tensor":
            self.index += 1
            self.expect("<")
            tensor = value_type.tensorType
            tensor.dataType = self.dtype()
            self.expect(",")
            self.expect("[")
            tensor.dimensions.extend(self.comma_list("]", self.dimension))
            tensor.rank = len(tensor.dimensions)
            self.expect(">")
        elif word == "list":
            self.index += 1
            self.expect("<")
            value_type.listType.type.CopyFrom(self.type())
            self.expect(",")
            value_type.listType.length.CopyFrom(self.dimension())
            self.expect(">")
        elif word == "tuple":
            self.index += 1
            self.expect("<")
            value_type.tupleType.SetInParent()
            value_type.tupleType.types.extend(self.comma_list(">", self.type))
        elif word == "dict":
            self.index += 1
            self.expect("<")
            value_type.dictionaryType.keyType.CopyFrom(self.type())
            self.expect(",")
            value_type.dictionaryType.valueType.CopyFrom(self.type())
            self.expect(">")
        elif word == "state":
            self.index += 1
            self.expect("<")
            value_type.stateType.wrappedType.CopyFrom(self.type())
            self.expect(">")
        elif word in DTYPE_FROM_TEXT:
            if self.dialect == "1.0":
                raise self.error("bare scalar types belong to program(1.3); program(1.0) writes tensor<dtype, []>")
            value_type.tensorType.dataType = self.dtype()
        else:
            raise self.error("expected a type (tensor<...>, list<...>, tuple<...>, dict<...>, state<...> or a scalar type)")
        return value_type

    # values -----------------------------------------------------------------------------------

    def value(self) -> MIL_pb2.Value:
        value = MIL_pb2.Value(type=self.type())
        self.expect("(")
        self.value_body(value)
        self.expect(")")
        return value

    def value_body(self, value: MIL_pb2.Value) -> None:
        """Fill `value` (its type already set) from the text of its body."""
        if self.at("BLOBFILE"):
            self.blob(value)
            return
        kind = value.type.WhichOneof("type")
        if kind == "tensorType":
            self.tensor_body(value)
        elif kind == "listType":
            element_type = value.type.listType.type
            self.expect("[")
            container = value.immediateValue.list
            container.SetInParent()
            container.values.extend(self.comma_list("]", lambda: self.nested_value(element_type)))
        elif kind == "tupleType":
            types = list(value.type.tupleType.types)
            self.expect("(")
            container = value.immediateValue.tuple
            container.SetInParent()
            start = self.current
            items = self.comma_list(")", lambda: self._tuple_item(types, container))
            if len(items) != len(types):
                raise self.error(f"tuple has {len(items)} elements but its type names {len(types)}", start)
        elif kind == "dictionaryType":
            key_type = value.type.dictionaryType.keyType
            value_type = value.type.dictionaryType.valueType
            self.expect("{")
            container = value.immediateValue.dictionary
            container.SetInParent()

            def pair():
                self.expect("{")
                entry = container.values.add()
                entry.key.CopyFrom(self.nested_value(key_type))
                self.expect(",")
                entry.value.CopyFrom(self.nested_value(value_type))
                self.expect("}")
                return entry

            self.comma_list("}", pair)
        else:
            raise self.error(f"a value of type {kind} has no literal form")

    def _tuple_item(self, types, container):
        position = len(container.values)
        if position >= len(types):
            raise self.error(f"tuple has more elements than its type names ({len(types)})")
        item = self.nested_value(types[position])
        container.values.append(item)
        return item

    def nested_value(self, value_type: MIL_pb2.ValueType) -> MIL_pb2.Value:
        value = MIL_pb2.Value()
        value.type.CopyFrom(value_type)
        self.value_body(value)
        return value

    def blob(self, value: MIL_pb2.Value) -> None:
        self.expect("BLOBFILE")
        self.expect("(")
        fields = {}

        def field():
            token = self.current
            key = self.identifier("'path' or 'offset'")
            if key not in (BLOB_PATH_KEY, BLOB_OFFSET_KEY) or key in fields:
                raise self.error("expected 'path' and 'offset' once each", token)
            self.expect("=")
            fields[key] = (self.value(), token)
            return key

        self.comma_list(")", field)
        if set(fields) != {BLOB_PATH_KEY, BLOB_OFFSET_KEY}:
            raise self.error("BLOBFILE needs both 'path' and 'offset'")
        path, path_token = fields[BLOB_PATH_KEY]
        offset, offset_token = fields[BLOB_OFFSET_KEY]
        path_values = path.immediateValue.tensor.strings.values
        if path.type.tensorType.dataType != DataType.STRING or len(path_values) != 1:
            raise self.error("BLOBFILE path must be a string", path_token)
        offset_type = offset.type.tensorType.dataType
        offset_values = decode_elements(offset.immediateValue.tensor, offset_type, 1, "BLOBFILE offset")
        if offset_type not in INT_DTYPES or len(offset_values) != 1 or offset_values[0] < 0:
            raise self.error("BLOBFILE offset must be a non-negative integer", offset_token)
        if value.type.WhichOneof("type") != "tensorType":
            raise self.error("only tensors can be stored in a blob file")
        value.blobFileValue.fileName = path_values[0]
        value.blobFileValue.offset = offset_values[0]

    def tensor_body(self, value: MIL_pb2.Value) -> None:
        tensor_type = value.type.tensorType
        dtype = tensor_type.dataType
        start = self.current
        if tensor_type.dimensions:
            self.expect("[")
            elements = self.comma_list("]", lambda: self.literal(dtype))
        else:
            elements = [self.literal(dtype)]
        count = element_count(tensor_type)
        if count is not None and count != len(elements):
            raise self.error(f"tensor has {len(elements)} elements but its shape holds {count}", start)
        try:
            encode_elements(value.immediateValue.tensor, dtype, elements, "literal")
        except UnsupportedValueError as exc:
            raise self.error(str(exc), start) from None
        value.immediateValue.tensor.SetInParent()

    def literal(self, dtype: int):
        token = self.current
        if dtype == DataType.STRING:
            if token.kind != "STRING":
                raise self.error("expected a string literal")
            self.index += 1
            return self.unquote(token)
        if dtype == DataType.BOOL:
            if token.kind == "IDENT" and token.text in ("true", "false"):
                self.index += 1
                return token.text == "true"
            raise self.error("expected true or false")
        if dtype in FLOAT_DTYPES:
            text = token.text
            if token.kind == "IDENT" and text in ("inf", "nan"):
                self.index += 1
                return math.inf if text == "inf" else math.nan
            if token.kind != "NUMBER":
                raise self.error(f"expected a {DTYPE_TEXT[dtype]} number")
            self.index += 1
            if text.endswith(("inf", "nan")):
                return -math.inf if text == "-inf" else math.nan
            return float.fromhex(text) if "x" in text or "X" in text else float(text)
        if token.kind != "NUMBER" or not re.fullmatch(r"-?\d+", token.text):
            raise self.error(f"expected an integer ({DTYPE_TEXT[dtype]})")
        self.index += 1
        return int(token.text)

    def unquote(self, token: Token) -> str:
        body = token.text[1:-1]
        if "\\" not in body:
            return body
        out = []
        i = 0
        while i < len(body):
            char = body[i]
            if char != "\\":
                out.append(char)
                i += 1
                continue
            escape = body[i + 1]
            if escape in _UNESCAPES:
                out.append(_UNESCAPES[escape])
                i += 2
            elif escape == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", body[i + 2 : i + 4]):
                out.append(chr(int(body[i + 2 : i + 4], 16)))
                i += 4
            else:
                raise self.error(f"unknown escape '\\{escape}' in string", token)
        return "".join(out)


def parse_program(text: str, *, file: str = "model.mil") -> MIL_pb2.Program:
    """Parse MIL text (either dialect) into a MILSpec `Program`. Blob references stay
    `BlobFileValue`s with the path as written (``@model_path/weights/weight.bin``). Raises
    `MilSyntaxError` naming `file`, line and column."""
    with gc_paused():
        return _Parser(text, file).program()
