"""MIL data types: names, protobuf codes, blob storage codes, numpy storage, and the element codecs
of immediate values (protobuf ``TensorValue``) and packed sub-byte / narrow-float data.

Immediate storage follows coremltools' writer (`backend/mil/helper.py`), which is also what Apple's
MIL reader expects: fp16, sub-byte, (u)int8 and uint32 values live in the `bytes` field, int16/
uint16/int32 in `ints`, 64-bit integers in `longInts`, fp32 in `floats`, fp64 in `doubles`. The
decoder accepts any storage field so that programs written by other tools still read.

Pure numpy: no coremltools import (protobuf messages are used through their attributes).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from kiln.coreml.errors import UnsupportedValueError


@dataclass(frozen=True)
class MilDType:
    """One MIL data type."""

    name: str  # MIL spelling: "fp16", "int32", ...
    proto: int  # coremltools.proto.MIL_pb2.DataType value
    storage: np.dtype  # numpy dtype the executor computes with
    user: np.dtype  # numpy dtype exchanged with callers (model inputs and outputs)
    bits: int  # storage width in bits in weight.bin / immediate bytes
    is_float: bool = False
    is_int: bool = False
    signed: bool = False


def _d(name, proto, storage, user, bits, *, flt=False, integer=False, signed=False):
    return MilDType(name, proto, np.dtype(storage), np.dtype(user), bits, flt, integer, signed)


_ALL = [
    _d("bool", 1, np.bool_, np.bool_, 8),
    _d("string", 2, np.str_, np.str_, 0),
    _d("fp16", 10, np.float32, np.float16, 16, flt=True),
    _d("fp32", 11, np.float32, np.float32, 32, flt=True),
    _d("fp64", 12, np.float64, np.float64, 64, flt=True),
    _d("bf16", 13, np.float32, np.float32, 16, flt=True),
    _d("fp8e4m3fn", 40, np.float32, np.float32, 8, flt=True),
    _d("fp8e5m2", 41, np.float32, np.float32, 8, flt=True),
    _d("int8", 21, np.int8, np.int8, 8, integer=True, signed=True),
    _d("int16", 22, np.int16, np.int16, 16, integer=True, signed=True),
    _d("int32", 23, np.int32, np.int32, 32, integer=True, signed=True),
    _d("int64", 24, np.int64, np.int64, 64, integer=True, signed=True),
    _d("int4", 25, np.int8, np.int8, 4, integer=True, signed=True),
    _d("uint8", 31, np.uint8, np.uint8, 8, integer=True),
    _d("uint16", 32, np.uint16, np.uint16, 16, integer=True),
    _d("uint32", 33, np.uint32, np.uint32, 32, integer=True),
    _d("uint64", 34, np.uint64, np.uint64, 64, integer=True),
    _d("uint4", 35, np.uint8, np.uint8, 4, integer=True),
    _d("uint2", 36, np.uint8, np.uint8, 2, integer=True),
    _d("uint1", 37, np.uint8, np.uint8, 1, integer=True),
    _d("uint6", 38, np.uint8, np.uint8, 6, integer=True),
    _d("uint3", 39, np.uint8, np.uint8, 3, integer=True),
]

BY_PROTO: dict[int, MilDType] = {d.proto: d for d in _ALL}
BY_NAME: dict[str, MilDType] = {d.name: d for d in _ALL}
BY_NAME["str"] = BY_NAME["string"]
SUB_BYTE = frozenset(d.name for d in _ALL if d.bits and d.bits < 8)

# Protobuf-code views (the MIL text printer and parser work on codes).
DTYPE_TEXT: dict[int, str] = {d.proto: d.name for d in _ALL}
DTYPE_FROM_TEXT: dict[str, int] = {d.name: d.proto for d in _ALL}
BOOL, STRING = BY_NAME["bool"].proto, BY_NAME["string"].proto
FLOAT_DTYPES = frozenset(d.proto for d in _ALL if d.is_float)
INT_DTYPES = frozenset(d.proto for d in _ALL if d.is_int)


def dtype_from_name(name: str) -> MilDType | None:
    """The MIL dtype spelled ``name`` (as in ``cast(dtype=...)``), or None."""
    return BY_NAME.get(name)


def numpy_for_dtype_string(name: str) -> np.dtype | None:
    """Storage numpy dtype for a MIL dtype string, or None when unknown."""
    d = BY_NAME.get(name)
    return d.storage if d is not None else None


def dtype_text(code: int, where: str) -> str:
    try:
        return DTYPE_TEXT[code]
    except KeyError:
        raise UnsupportedValueError(f"unknown MIL data type code {code}", where) from None


# --- weight.bin dtype codes and raw element layouts -------------------------------------------

BLOB_DTYPES: dict[int, str] = {
    1: "fp16", 2: "fp32", 3: "uint8", 4: "int8", 5: "bf16", 6: "int16", 7: "uint16", 8: "int4",
    9: "uint1", 10: "uint2", 11: "uint4", 12: "uint3", 13: "uint6", 14: "int32", 15: "uint32",
    16: "fp8e4m3fn", 17: "fp8e5m2",
}
BLOB_CODES: dict[str, int] = {name: code for code, name in BLOB_DTYPES.items()}

# Little-endian layout of each whole-byte type's elements (bf16 and fp8 as their bit patterns).
RAW_NUMPY: dict[str, np.dtype] = {
    name: np.dtype(spec) for name, spec in {
        "fp16": "<f2", "fp32": "<f4", "fp64": "<f8", "bool": "u1", "bf16": "<u2",
        "fp8e4m3fn": "u1", "fp8e5m2": "u1", "int8": "i1", "uint8": "u1", "int16": "<i2",
        "uint16": "<u2", "int32": "<i4", "uint32": "<u4", "int64": "<i8", "uint64": "<u8",
    }.items()
}


# --- narrow floats ------------------------------------------------------------------------------


def bf16_bits_to_float32(raw: np.ndarray) -> np.ndarray:
    """Decode raw bfloat16 bit patterns (uint16) to float32."""
    return (np.asarray(raw).astype(np.uint32) << 16).view(np.float32)


def float_to_bf16_bits(values) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even."""
    bits = np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")


def _fp8_table(exp_bits: int, man_bits: int, ieee_special: bool) -> np.ndarray:
    """All 256 values of an 8-bit float format (e4m3fn: no infinities, one NaN pattern)."""
    bias = (1 << (exp_bits - 1)) - 1
    table = np.zeros(256, dtype=np.float32)
    for code in range(256):
        sign = -1.0 if code & 0x80 else 1.0
        exp = (code >> man_bits) & ((1 << exp_bits) - 1)
        man = code & ((1 << man_bits) - 1)
        max_exp = (1 << exp_bits) - 1
        if ieee_special and exp == max_exp:
            value = np.inf if man == 0 else np.nan
        elif not ieee_special and exp == max_exp and man == (1 << man_bits) - 1:
            value = np.nan  # e4m3fn: only S.1111.111 is NaN, there is no infinity
        elif exp == 0:
            value = (man / (1 << man_bits)) * 2.0 ** (1 - bias)
        else:
            value = (1 + man / (1 << man_bits)) * 2.0 ** (exp - bias)
        table[code] = sign * value
    return table


FP8E4M3FN_TABLE = _fp8_table(4, 3, ieee_special=False)
FP8E5M2_TABLE = _fp8_table(5, 2, ieee_special=True)
FP8_TABLES = {"fp8e4m3fn": FP8E4M3FN_TABLE, "fp8e5m2": FP8E5M2_TABLE}
# positive half only: the sign bit is added back when encoding (so -0.0 keeps its sign)
_FP8_CODES = {
    name: {float(value): code for code, value in enumerate(table[:128]) if not math.isnan(value)}
    for name, table in FP8_TABLES.items()
}


def decode_narrow_float(name: str, raw: np.ndarray) -> np.ndarray:
    """bf16 / fp8 bit patterns -> float32; other types unchanged."""
    if name == "bf16":
        return bf16_bits_to_float32(raw)
    if name in FP8_TABLES:
        return FP8_TABLES[name][raw]
    return raw


def encode_fp8(name: str, values, where: str) -> bytes:
    codes = _FP8_CODES[name]
    out = bytearray()
    for value in values:
        if math.isnan(value):
            out.append(0x7F)
        elif abs(value) in codes:
            out.append(codes[abs(value)] | (0x80 if math.copysign(1.0, value) < 0 else 0))
        else:
            raise UnsupportedValueError(f"{value!r} is not representable in {name}", where)
    return bytes(out)


# --- sub-byte packing ---------------------------------------------------------------------------


def unpack_bits(packed: np.ndarray, nbits: int, count: int, signed: bool) -> np.ndarray:
    """Unpack ``count`` n-bit integers packed least-significant-bit first from a byte stream.

    Element ``i`` occupies bits ``[i*nbits, (i+1)*nbits)`` of the stream. Signed values are
    two's-complement sign-extended. Returns int8 (signed) or uint8 values."""
    packed = np.ascontiguousarray(packed).view(np.uint8).reshape(-1)
    if count * nbits > packed.size * 8:
        raise ValueError(f"{count} {nbits}-bit values need {count * nbits} bits, have {packed.size * 8}")
    if nbits == 8:
        values = packed[:count]
        return values.view(np.int8).copy() if signed else values.copy()
    bits = np.unpackbits(packed, bitorder="little")[: count * nbits].reshape(count, nbits)
    weights = (1 << np.arange(nbits, dtype=np.uint16)).astype(np.uint16)
    values = (bits.astype(np.uint16) * weights).sum(axis=1).astype(np.int16)
    if signed:
        values = np.where(values >= (1 << (nbits - 1)), values - (1 << nbits), values)
        return values.astype(np.int8)
    return values.astype(np.uint8)


def pack_bits(values, nbits: int) -> bytes:
    """The inverse of :func:`unpack_bits`: n-bit integers packed least-significant-bit first."""
    array = np.asarray(values, dtype=np.int64).reshape(-1) & ((1 << nbits) - 1)
    if not array.size:
        return b""
    groups = (array[:, None] >> np.arange(nbits, dtype=np.int64)) & 1
    return np.packbits(groups.astype(np.uint8).reshape(-1), bitorder="little").tobytes()


# --- immediate values (protobuf TensorValue) ----------------------------------------------------

# The storage field coremltools (and so every package kiln meets) uses for each data type.
CANONICAL_STORAGE: dict[int, str] = {code: "bytes" for code in DTYPE_TEXT}
CANONICAL_STORAGE.update({
    BY_NAME[name].proto: field for name, field in {
        "bool": "bools", "string": "strings", "fp32": "floats", "fp64": "doubles", "int16": "ints",
        "uint16": "ints", "int32": "ints", "int64": "longInts", "uint64": "longInts",
    }.items()
})


def _decode_from_field(values: list, dtype: MilDType, storage: str, where: str) -> list:
    if dtype.is_float:
        return [float(v) for v in values]
    if dtype.name == "bool":
        return [bool(v) for v in values]
    if dtype.name == "string":
        if storage != "strings":
            raise UnsupportedValueError(f"string tensor stored in '{storage}'", where)
        return values
    if storage in ("floats", "doubles"):
        raise UnsupportedValueError(f"integer tensor stored in '{storage}'", where)
    if storage == "strings":
        raise UnsupportedValueError(f"{dtype.name} tensor stored as strings", where)
    return [int(v) for v in values]


def decode_elements(tensor, dtype: int, count: int | None, where: str) -> list:
    """The elements of an immediate ``TensorValue`` as Python values (float, int, bool or str)."""
    storage = tensor.WhichOneof("value")
    if storage is None:
        return []
    mil = BY_PROTO.get(dtype)
    if mil is None:
        raise UnsupportedValueError(f"unknown MIL data type code {dtype}", where)
    if storage != "bytes":
        return _decode_from_field(list(getattr(tensor, storage).values), mil, storage, where)
    data = tensor.bytes.values
    try:
        if mil.name in SUB_BYTE:
            n = count if count is not None else len(data) * 8 // mil.bits
            return unpack_bits(np.frombuffer(data, np.uint8), mil.bits, n, mil.signed).astype(np.int64).tolist()
        if mil.name in FP8_TABLES:
            return FP8_TABLES[mil.name][np.frombuffer(data, np.uint8)].astype(np.float64).tolist()
        if mil.name == "bool":
            return [b != 0 for b in data]
        if mil.name in RAW_NUMPY:
            raw = np.frombuffer(data, dtype=RAW_NUMPY[mil.name])
            if mil.is_float:
                return decode_narrow_float(mil.name, raw).astype(np.float64).tolist()
            return raw.tolist()
    except ValueError as exc:
        raise UnsupportedValueError(f"bad byte storage for {mil.name}: {exc}", where) from None
    raise UnsupportedValueError(f"{mil.name} tensor stored as bytes", where)


def _encode_bytes(mil: MilDType, values: list, where: str) -> bytes:
    if mil.name in SUB_BYTE:
        return pack_bits(values, mil.bits)
    if mil.name == "fp16":
        return np.asarray(values, dtype=np.float64).astype("<f2").tobytes()
    if mil.name == "bf16":
        return float_to_bf16_bits(values).tobytes()
    if mil.name in FP8_TABLES:
        return encode_fp8(mil.name, values, where)
    if mil.name == "fp32":
        return struct.pack(f"<{len(values)}f", *values)
    if mil.name == "fp64":
        return struct.pack(f"<{len(values)}d", *values)
    if mil.name == "bool":
        return bytes(1 if v else 0 for v in values)
    if mil.is_int:
        info = np.iinfo(RAW_NUMPY[mil.name])
        for value in values:
            if not info.min <= value <= info.max:
                raise UnsupportedValueError(f"{value} out of range for {mil.name}", where)
        return np.asarray(values, dtype=RAW_NUMPY[mil.name]).tobytes()
    raise UnsupportedValueError(f"cannot store {mil.name} values", where)


def encode_elements(tensor, dtype: int, values: list, where: str) -> None:
    """Fill ``tensor`` (a ``TensorValue``) with ``values`` in the canonical storage field of ``dtype``."""
    mil = BY_PROTO.get(dtype)
    if mil is None:
        raise UnsupportedValueError(f"cannot store values of unknown data type code {dtype}", where)
    storage = CANONICAL_STORAGE[dtype]
    if storage != "bytes":
        field = getattr(tensor, storage)
        field.SetInParent()  # an empty tensor still records which field it uses
        if values:
            field.values.extend(values)
        return
    tensor.bytes.values = _encode_bytes(mil, values, where)
