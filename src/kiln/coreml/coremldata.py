"""`coremldata.bin` (model description container) and `analytics/coremldata.bin`.

`coremldata.bin`, as `coremlc` 3500.x writes it for an ML Program (all little-endian):

    0x00  u32  502                   the `mlProgram` field number of `Model`
    0x04  u32  5
    0x08  20   zero bytes
    0x1c  u64  7                     length of the next string
    0x24  7    "generic"
    0x2b  u32  specificationVersion
    0x2f  28   zero bytes
    0x4b  u64  payload length
    0x53  ...  serialized ModelDescription (inputs, outputs, metadata)
    ...   u32  502, then 12 zero bytes

The ModelDescription is re-serialized with its fields in field-number order, as protobuf does,
except that the `metadata.userDefined` map is written in a caller-chosen order (sorted by key by
default): Apple writes that map in hash order, which differs from one compile to the next.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from pathlib import Path

from kiln.coreml.proto import Model_pb2

from kiln.coreml.errors import CoremlDataError

ML_PROGRAM_FIELD = 502
HEADER_WORD = 5
TARGET = b"generic"
SPEC_VERSION_OFFSET = 0x2B
PAYLOAD_LENGTH_OFFSET = 0x4B
PAYLOAD_OFFSET = 0x53
TRAILER = struct.pack("<I", ML_PROGRAM_FIELD) + bytes(12)

_METADATA_FIELD = 100  # ModelDescription.metadata
_USER_DEFINED_FIELD = 100  # Metadata.userDefined


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def serialize_description(description: Model_pb2.ModelDescription, user_defined_order: list[str] | None = None) -> bytes:
    """Serialize `description` with `metadata.userDefined` in `user_defined_order` (default:
    sorted keys). Always writes the metadata field, even empty, as `coremlc` does."""
    user_defined = dict(description.metadata.userDefined)
    order = sorted(user_defined) if user_defined_order is None else list(user_defined_order)
    if sorted(order) != sorted(user_defined):
        raise ValueError("user_defined_order must name every userDefined key exactly once")

    rest = Model_pb2.ModelDescription()
    rest.CopyFrom(description)
    rest.ClearField("metadata")
    metadata = Model_pb2.Metadata()
    metadata.CopyFrom(description.metadata)
    metadata.ClearField("userDefined")

    # Metadata fields 1-4 precede userDefined (100), and metadata (100) is the highest field of
    # ModelDescription, so appending by hand keeps protobuf's field-number order.
    metadata_bytes = metadata.SerializeToString(deterministic=True)
    for key in order:
        entry = _length_delimited(1, key.encode("utf-8")) + _length_delimited(2, user_defined[key].encode("utf-8"))
        metadata_bytes += _length_delimited(_USER_DEFINED_FIELD, entry)
    return rest.SerializeToString(deterministic=True) + _length_delimited(_METADATA_FIELD, metadata_bytes)


def build_coremldata(specification_version: int, description: Model_pb2.ModelDescription,
                     user_defined_order: list[str] | None = None) -> bytes:
    payload = serialize_description(description, user_defined_order)
    header = bytearray(PAYLOAD_OFFSET)
    struct.pack_into("<II", header, 0, ML_PROGRAM_FIELD, HEADER_WORD)
    struct.pack_into("<Q", header, 0x1C, len(TARGET))
    header[0x24 : 0x24 + len(TARGET)] = TARGET
    struct.pack_into("<I", header, SPEC_VERSION_OFFSET, specification_version)
    struct.pack_into("<Q", header, PAYLOAD_LENGTH_OFFSET, len(payload))
    return bytes(header) + payload + TRAILER


def parse_coremldata(data: bytes, path: str = "coremldata.bin") -> tuple[int, Model_pb2.ModelDescription, list[str]]:
    """(specificationVersion, ModelDescription, userDefined keys in file order)."""
    if len(data) < PAYLOAD_OFFSET + len(TRAILER):
        raise CoremlDataError(f"file is {len(data)} bytes, shorter than header and trailer", path)
    (magic,) = struct.unpack_from("<I", data, 0)
    if magic != ML_PROGRAM_FIELD:
        raise CoremlDataError(f"starts with {magic}, expected {ML_PROGRAM_FIELD} (an ML Program)", path, 0)
    (target_length,) = struct.unpack_from("<Q", data, 0x1C)
    if target_length != len(TARGET) or data[0x24 : 0x24 + len(TARGET)] != TARGET:
        raise CoremlDataError("compile target is not 'generic'", path, 0x1C)
    (spec_version,) = struct.unpack_from("<I", data, SPEC_VERSION_OFFSET)
    (payload_length,) = struct.unpack_from("<Q", data, PAYLOAD_LENGTH_OFFSET)
    end = PAYLOAD_OFFSET + payload_length
    if end + len(TRAILER) > len(data):
        raise CoremlDataError(f"payload length {payload_length} runs past the end of the file", path, PAYLOAD_LENGTH_OFFSET)
    if data[end : end + 4] != TRAILER[:4]:
        raise CoremlDataError("trailer does not start with 502", path, end)
    description = Model_pb2.ModelDescription()
    payload = data[PAYLOAD_OFFSET:end]
    try:
        description.ParseFromString(payload)
    except Exception as exc:  # protobuf's DecodeError type differs between implementations
        raise CoremlDataError(f"ModelDescription does not parse: {exc}", path, PAYLOAD_OFFSET) from None
    return spec_version, description, _user_defined_key_order(payload)


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, position


def _fields(data: bytes):
    """(field number, wire type, payload bytes or int) of each top-level field of a message."""
    position = 0
    while position < len(data):
        tag, position = _read_varint(data, position)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, position = _read_varint(data, position)
        elif wire == 1:
            value, position = data[position : position + 8], position + 8
        elif wire == 2:
            length, position = _read_varint(data, position)
            value, position = data[position : position + length], position + length
        elif wire == 5:
            value, position = data[position : position + 4], position + 4
        else:
            return
        yield field, wire, value


def _user_defined_key_order(payload: bytes) -> list[str]:
    keys = []
    for field, wire, metadata in _fields(payload):
        if field == _METADATA_FIELD and wire == 2:
            for inner, inner_wire, entry in _fields(metadata):
                if inner == _USER_DEFINED_FIELD and inner_wire == 2:
                    for entry_field, entry_wire, key in _fields(entry):
                        if entry_field == 1 and entry_wire == 2:
                            keys.append(key.decode("utf-8"))
    return keys


def read_coremldata(path: str | Path) -> tuple[int, Model_pb2.ModelDescription]:
    """(specificationVersion, ModelDescription) of a `.mlmodelc`'s `coremldata.bin`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CoremlDataError(f"cannot read: {exc.strerror}", str(path)) from None
    spec_version, description, _ = parse_coremldata(data, str(path))
    return spec_version, description


def user_defined_order(path: str | Path) -> list[str]:
    """The `userDefined` metadata keys of a `coremldata.bin` in the order the file holds them."""
    return parse_coremldata(Path(path).read_bytes(), str(path))[2]


# --- analytics/coremldata.bin ------------------------------------------------------------------


def _length_prefixed(text: str) -> bytes:
    encoded = text.encode("utf-8")
    return struct.pack("<Q", len(encoded)) + encoded


def build_analytics(model_spec_bytes: bytes, model_name: str = "model") -> bytes:
    """Sections of ``u64 len + name, u64 count, count x (key, value)``; `modelHash` is
    base64(SHA-256) of the package's `model.mlmodel` bytes."""
    sections = [
        ("NeuralNetworkModelDetails", [("containsCustomLayer", "0"), ("modelDimension", "0")]),
        ("SpecificationDetails", [
            ("modelHash", base64.b64encode(hashlib.sha256(model_spec_bytes).digest()).decode("ascii")),
            ("modelName", model_name),
        ]),
    ]
    out = bytearray()
    for name, entries in sections:
        out += _length_prefixed(name) + struct.pack("<Q", len(entries))
        for key, value in entries:
            out += _length_prefixed(key) + _length_prefixed(value)
    return bytes(out)


def parse_analytics(data: bytes, path: str = "analytics/coremldata.bin") -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    position = 0

    def text() -> str:
        nonlocal position
        if position + 8 > len(data):
            raise CoremlDataError("truncated length field", path, position)
        (length,) = struct.unpack_from("<Q", data, position)
        start = position + 8
        if start + length > len(data):
            raise CoremlDataError(f"string of {length} bytes runs past the end", path, position)
        position = start + length
        return data[start:position].decode("utf-8")

    while position < len(data):
        name = text()
        if position + 8 > len(data):
            raise CoremlDataError("truncated entry count", path, position)
        (count,) = struct.unpack_from("<Q", data, position)
        position += 8
        sections[name] = {}
        for _ in range(count):
            key = text()
            sections[name][key] = text()
    return sections
