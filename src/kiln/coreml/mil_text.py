"""MIL text (`model.mil`): a printer from a MILSpec `Program` protobuf and a parser back to one.

Two dialects:

* ``"1.0"``: what Apple's `coremlc` 3500.x writes (Xcode 15). Byte-identical to the golden bundles:
  ``program(1.0)``, every value typed as ``tensor<dtype, [dims]>`` (scalars ``tensor<dtype, []>``),
  ``dict<tensor<string, []>, tensor<string, []>>`` buildInfo.
* ``"1.3"``: what `coremlc` 3505+ writes (Xcode 16+): scalar types printed bare (``string``,
  ``int32``, ``fp32``), so ``string("x")``, ``uint64(64)``, ``dict<string, string>``. Checked against
  a handful of public Apple-compiled bundles only, never against a compiler run here: treat it as
  unverified.

Layout shared by both (from the golden files): function header at 4 spaces, operations at 12,
the block's ``} -> (outputs);`` at 8; function inputs sorted by name; an operation is
``{outputs} = {op}({inputs sorted by key})[{attributes sorted by key}];``; floats are C99 hex
floats (``float.hex()`` with trailing zeros stripped; fp16 widened first); no final newline.

Not seen in any Apple output available here, so kiln's own choice (documented, parseable,
unverified): tensors of rank >= 2 print their elements flat in row-major order; nested blocks
(cond / while_loop / scan) print after the operation's attributes as
``{ block(inputs) { ops } -> (outputs); ... }``; an argument of several bindings (variadic
inputs such as concat's ``values``) prints as ``(a, b)``; strings escape ``\\``, ``"`` and control
characters C-style. `docString` fields are not part of the text.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import math
import re
from dataclasses import dataclass
from typing import NamedTuple

from kiln.coreml.proto import MIL_pb2

from kiln.coreml.dtypes import (
    DTYPE_FROM_TEXT,
    DTYPE_TEXT,
    FLOAT_DTYPES,
    INT_DTYPES,
    decode_elements,
    dtype_text,
    encode_elements,
)
from kiln.coreml.errors import MilSyntaxError, UnsupportedValueError

DataType = MIL_pb2.DataType

DIALECTS = ("1.0", "1.3")

# Protobuf opset names <-> the names in a function header.
OPSET_TEXT = {"CoreML5": "ios15", "CoreML6": "ios16", "CoreML7": "ios17", "CoreML8": "ios18", "CoreML9": "ios26"}
OPSET_FROM_TEXT = {text: opset for opset, text in OPSET_TEXT.items()}

BLOB_PATH_KEY = "path"
BLOB_OFFSET_KEY = "offset"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _byte_order(key: str) -> bytes:
    # Apple sorts with std::string comparison: byte order of the UTF-8 encoding.
    return key.encode("utf-8")


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


# ---------------------------------------------------------------------------------------------
# Printer
# ---------------------------------------------------------------------------------------------


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
        count = _element_count(tensor_type)
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
                 for k in sorted(attributes, key=_byte_order))
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
            for k in sorted(op.inputs, key=_byte_order)
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
        inputs = sorted(function.inputs, key=lambda n: _byte_order(n.name))
        header = (
            f"func {self.name(name, where)}<{opset}>({self.typed_names(inputs, where)})"
            f"{self._spaced(self.attributes(function.attributes, where))}"
        )
        self.block(function.block_specializations[function.opset], header, 4, lines, where)

    def program(self, program: MIL_pb2.Program, build_info: dict[str, str] | None) -> str:
        lines = [f"program({self.dialect})"]
        attributes = dict(program.attributes)
        if build_info is not None:
            attributes["buildInfo"] = _merged_build_info(attributes.get("buildInfo"), build_info)
        if attributes:
            lines.append(self.attributes(attributes, "program"))
        lines.append("{")
        for name in sorted(program.functions, key=_byte_order):
            self.function(name, program.functions[name], lines)
        lines.append("}")
        return "\n".join(lines)


def _element_count(tensor_type: MIL_pb2.TensorType) -> int | None:
    count = 1
    for dim in tensor_type.dimensions:
        if dim.WhichOneof("dimension") != "constant":
            return None
        count *= dim.constant.size
    return count


def _string_scalar(text: str) -> MIL_pb2.Value:
    value = MIL_pb2.Value()
    value.type.tensorType.dataType = DataType.STRING
    value.immediateValue.tensor.strings.values.append(text)
    return value


def build_info_entries(value: MIL_pb2.Value | None) -> dict[str, str]:
    """The string -> string entries of a program's ``buildInfo`` attribute."""
    if value is None:
        return {}
    where = "program attribute buildInfo"
    if value.WhichOneof("value") != "immediateValue" or value.immediateValue.WhichOneof("value") != "dictionary":
        raise UnsupportedValueError("buildInfo is not an immediate dictionary", where)
    entries = {}
    for pair in value.immediateValue.dictionary.values:
        key = pair.key.immediateValue.tensor.strings.values
        val = pair.value.immediateValue.tensor.strings.values
        if len(key) != 1 or len(val) != 1:
            raise UnsupportedValueError("buildInfo entry is not a pair of strings", where)
        entries[key[0]] = val[0]
    return entries


def _merged_build_info(existing: MIL_pb2.Value | None, extra: dict[str, str]) -> MIL_pb2.Value:
    entries = build_info_entries(existing)
    entries.update(extra)
    value = MIL_pb2.Value()
    scalar = MIL_pb2.ValueType()
    scalar.tensorType.dataType = DataType.STRING
    value.type.dictionaryType.keyType.CopyFrom(scalar)
    value.type.dictionaryType.valueType.CopyFrom(scalar)
    dictionary = value.immediateValue.dictionary
    dictionary.SetInParent()
    for key in sorted(entries, key=_byte_order):
        pair = dictionary.values.add()
        pair.key.CopyFrom(_string_scalar(key))
        pair.value.CopyFrom(_string_scalar(entries[key]))
    return value


def print_program(program: MIL_pb2.Program, *, dialect: str = "1.0", build_info: dict[str, str] | None = None) -> str:
    """`program` as MIL text. `build_info` entries are merged into the program's ``buildInfo``
    attribute (as `coremlc` adds its own version strings); None prints the attributes as they are."""
    return _Printer(dialect).program(program, build_info)


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------


class Token(NamedTuple):
    kind: str  # IDENT, NUMBER, STRING, PUNCT, END
    text: str
    offset: int


# Leading whitespace belongs to the token after it; comments are matched and dropped.
_TOKEN = re.compile(
    r"""
    \s*(?:
    (?P<COMMENT>//[^\n]*)
  | (?P<NUMBER>-?0[xX][0-9a-fA-F]+(?:\.[0-9a-fA-F]*)?[pP][+-]?\d+
              | -?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?
              | -(?:inf|nan)\b)
  | (?P<STRING>"(?:[^"\\\n]|\\.)*")
  | (?P<IDENT>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<PUNCT>->|\.\.\.|[()\[\]{}<>,=;?]))
    """,
    re.VERBOSE,
)


@contextlib.contextmanager
def _gc_paused():
    """~160,000 tokens for a full-size encoder: with the cyclic GC paused while they are made,
    tokenizing takes 0.3 s instead of 1.3 s (each allocation burst rescanned every token made so
    far; tokens and the parser's messages hold no cycles)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def tokenize(text: str, file: str = "model.mil") -> list[Token]:
    with _gc_paused():
        return _tokenize(text, file)


def _tokenize(text: str, file: str) -> list[Token]:
    tokens: list[Token] = []
    append = tokens.append
    position = 0
    for found in _TOKEN.finditer(text):
        if found.start() != position:  # finditer skipped what no token matches
            break
        kind = found.lastgroup
        position = found.end()
        if kind != "COMMENT":
            append(Token(kind, found.group(kind), found.start(kind)))
    rest = len(text) - len(text[position:].lstrip())
    if rest != len(text):
        position = rest
        line, column = _line_column(text, position)
        raise MilSyntaxError(f"unexpected character {text[position]!r}", file, line, column)
    tokens.append(Token("END", "", len(text)))
    return tokens


def _line_column(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


_UNESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r", "0": "\0"}


# ---------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------


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
        count = _element_count(tensor_type)
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
    with _gc_paused():
        return _Parser(text, file).program()
