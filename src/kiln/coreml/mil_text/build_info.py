"""A program's ``buildInfo`` attribute (a string -> string dictionary): reading its entries, and
merging others into it as `coremlc` adds its own version strings."""

from __future__ import annotations

from kiln.coreml.proto import MIL_pb2

from kiln.coreml.errors import UnsupportedValueError
from kiln.coreml.mil_text.grammar import byte_order

DataType = MIL_pb2.DataType


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


def merged_build_info(existing: MIL_pb2.Value | None, extra: dict[str, str]) -> MIL_pb2.Value:
    entries = build_info_entries(existing)
    entries.update(extra)
    value = MIL_pb2.Value()
    scalar = MIL_pb2.ValueType()
    scalar.tensorType.dataType = DataType.STRING
    value.type.dictionaryType.keyType.CopyFrom(scalar)
    value.type.dictionaryType.valueType.CopyFrom(scalar)
    dictionary = value.immediateValue.dictionary
    dictionary.SetInParent()
    for key in sorted(entries, key=byte_order):
        pair = dictionary.values.add()
        pair.key.CopyFrom(_string_scalar(key))
        pair.value.CopyFrom(_string_scalar(entries[key]))
    return value
