"""MIL data types: their text names, how immediate values of each are stored in a protobuf
`TensorValue`, and conversion between that storage and plain Python element lists.

Storage follows coremltools' writer (`backend/mil/helper.py`), which is also what Apple's MIL
reader expects: fp16, sub-byte, (u)int8 and uint32 values live in the `bytes` field, int16/uint16/
int32 in `ints`, 64-bit integers in `longInts`, fp32 in `floats`, fp64 in `doubles`. The decoder
accepts any storage field so that programs written by other tools still print.
"""

from __future__ import annotations

import math
import struct

import numpy as np
from coremltools.proto import MIL_pb2

from kiln.compile.errors import UnsupportedValueError

DataType = MIL_pb2.DataType

DTYPE_TEXT: dict[int, str] = {
    DataType.BOOL: "bool",
    DataType.STRING: "string",
    DataType.FLOAT8E4M3FN: "fp8e4m3fn",
    DataType.FLOAT8E5M2: "fp8e5m2",
    DataType.FLOAT16: "fp16",
    DataType.FLOAT32: "fp32",
    DataType.FLOAT64: "fp64",
    DataType.BFLOAT16: "bf16",
    DataType.INT8: "int8",
    DataType.INT16: "int16",
    DataType.INT32: "int32",
    DataType.INT64: "int64",
    DataType.INT4: "int4",
    DataType.UINT8: "uint8",
    DataType.UINT16: "uint16",
    DataType.UINT32: "uint32",
    DataType.UINT64: "uint64",
    DataType.UINT4: "uint4",
    DataType.UINT2: "uint2",
    DataType.UINT1: "uint1",
    DataType.UINT6: "uint6",
    DataType.UINT3: "uint3",
}
DTYPE_FROM_TEXT: dict[str, int] = {text: code for code, text in DTYPE_TEXT.items()}

FLOAT_DTYPES = frozenset(
    {DataType.FLOAT8E4M3FN, DataType.FLOAT8E5M2, DataType.FLOAT16, DataType.FLOAT32,
     DataType.FLOAT64, DataType.BFLOAT16}
)
# Sub-byte types: bit width and signedness. Packed least-significant bit first.
SUB_BYTE = {
    DataType.INT4: (4, True),
    DataType.UINT1: (1, False),
    DataType.UINT2: (2, False),
    DataType.UINT3: (3, False),
    DataType.UINT4: (4, False),
    DataType.UINT6: (6, False),
}
# Whole-byte integer types stored little-endian in `bytes` (when they are stored there).
INT_NUMPY = {
    DataType.INT8: "<i1",
    DataType.UINT8: "<u1",
    DataType.INT16: "<i2",
    DataType.UINT16: "<u2",
    DataType.INT32: "<i4",
    DataType.UINT32: "<u4",
    DataType.INT64: "<i8",
    DataType.UINT64: "<u8",
}
INT_DTYPES = frozenset(INT_NUMPY) | frozenset(SUB_BYTE)

# The storage field coremltools (and so every package kiln meets) uses for each data type.
CANONICAL_STORAGE: dict[int, str] = {
    DataType.BOOL: "bools",
    DataType.STRING: "strings",
    DataType.FLOAT32: "floats",
    DataType.FLOAT64: "doubles",
    DataType.INT16: "ints",
    DataType.UINT16: "ints",
    DataType.INT32: "ints",
    DataType.INT64: "longInts",
    DataType.UINT64: "longInts",
}
for _code in DTYPE_TEXT:
    CANONICAL_STORAGE.setdefault(_code, "bytes")


def dtype_text(code: int, where: str) -> str:
    try:
        return DTYPE_TEXT[code]
    except KeyError:
        raise UnsupportedValueError(f"unknown MIL data type code {code}", where) from None


def _fp8_table(exponent_bits: int, mantissa_bits: int, finite_only: bool) -> list[float]:
    """All 256 values of an 8-bit float format (e4m3fn: no infinities, one NaN pattern)."""
    bias = (1 << (exponent_bits - 1)) - 1
    table = []
    for code in range(256):
        sign = -1.0 if code & 0x80 else 1.0
        exponent = (code >> mantissa_bits) & ((1 << exponent_bits) - 1)
        mantissa = code & ((1 << mantissa_bits) - 1)
        max_exponent = (1 << exponent_bits) - 1
        if finite_only and exponent == max_exponent and mantissa == (1 << mantissa_bits) - 1:
            table.append(math.nan)
        elif not finite_only and exponent == max_exponent:
            table.append(sign * math.inf if mantissa == 0 else math.nan)
        elif exponent == 0:
            table.append(sign * mantissa * 2.0 ** (1 - bias - mantissa_bits))
        else:
            table.append(sign * (1 + mantissa / (1 << mantissa_bits)) * 2.0 ** (exponent - bias))
    return table


FP8_TABLES = {
    DataType.FLOAT8E4M3FN: _fp8_table(4, 3, finite_only=True),
    DataType.FLOAT8E5M2: _fp8_table(5, 2, finite_only=False),
}
_FP8_CODES = {
    # positive half only: the sign bit is added back when encoding (so -0.0 keeps its sign)
    dtype: {value: code for code, value in enumerate(table[:128]) if not math.isnan(value)}
    for dtype, table in FP8_TABLES.items()
}


def unpack_sub_byte(data: bytes, bits: int, signed: bool, count: int) -> list[int]:
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    if flat.size < count * bits:
        raise ValueError(f"{len(data)} bytes hold fewer than {count} {bits}-bit values")
    groups = flat[: count * bits].reshape(count, bits).astype(np.int64)
    values = groups @ (1 << np.arange(bits, dtype=np.int64))
    if signed:
        values = np.where(values >= 1 << (bits - 1), values - (1 << bits), values)
    return values.tolist()


def pack_sub_byte(values: list[int], bits: int) -> bytes:
    if not values:
        return b""
    array = np.asarray(values, dtype=np.int64) & ((1 << bits) - 1)
    groups = (array[:, None] >> np.arange(bits, dtype=np.int64)) & 1
    return np.packbits(groups.astype(np.uint8).reshape(-1), bitorder="little").tobytes()


def decode_elements(tensor: MIL_pb2.TensorValue, dtype: int, count: int | None, where: str) -> list:
    """The elements of an immediate tensor as Python values (float, int, bool or str)."""
    storage = tensor.WhichOneof("value")
    if storage is None:
        return []
    if storage != "bytes":
        values = list(getattr(tensor, storage).values)
        if dtype in FLOAT_DTYPES:
            return [float(v) for v in values]
        if dtype == DataType.BOOL:
            return [bool(v) for v in values]
        if dtype == DataType.STRING:
            if storage != "strings":
                raise UnsupportedValueError(f"string tensor stored in '{storage}'", where)
            return values
        if storage in ("floats", "doubles"):
            raise UnsupportedValueError(f"integer tensor stored in '{storage}'", where)
        if storage == "strings":
            raise UnsupportedValueError(f"{DTYPE_TEXT.get(dtype, dtype)} tensor stored as strings", where)
        return [int(v) for v in values]

    data = tensor.bytes.values
    try:
        if dtype in SUB_BYTE:
            bits, signed = SUB_BYTE[dtype]
            n = count if count is not None else len(data) * 8 // bits
            return unpack_sub_byte(data, bits, signed, n)
        if dtype == DataType.FLOAT16:
            return np.frombuffer(data, dtype="<f2").astype(np.float64).tolist()
        if dtype == DataType.BFLOAT16:
            halves = np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16
            return halves.view(np.float32).astype(np.float64).tolist()
        if dtype in FP8_TABLES:
            table = FP8_TABLES[dtype]
            return [table[b] for b in data]
        if dtype == DataType.FLOAT32:
            return np.frombuffer(data, dtype="<f4").astype(np.float64).tolist()
        if dtype == DataType.FLOAT64:
            return np.frombuffer(data, dtype="<f8").tolist()
        if dtype in INT_NUMPY:
            return np.frombuffer(data, dtype=INT_NUMPY[dtype]).tolist()
        if dtype == DataType.BOOL:
            return [b != 0 for b in data]
    except ValueError as exc:
        raise UnsupportedValueError(f"bad byte storage for {DTYPE_TEXT.get(dtype, dtype)}: {exc}", where) from None
    raise UnsupportedValueError(f"{DTYPE_TEXT.get(dtype, dtype)} tensor stored as bytes", where)


def encode_elements(tensor: MIL_pb2.TensorValue, dtype: int, values: list, where: str) -> None:
    """Fill `tensor` with `values` in the canonical storage field of `dtype`."""
    storage = CANONICAL_STORAGE[dtype]
    if storage != "bytes":
        field = getattr(tensor, storage)
        field.SetInParent()  # an empty tensor still records which field it uses
        if values:
            field.values.extend(values)
        return
    if dtype in SUB_BYTE:
        data = pack_sub_byte(values, SUB_BYTE[dtype][0])
    elif dtype == DataType.FLOAT16:
        data = np.asarray(values, dtype=np.float64).astype("<f2").tobytes()
    elif dtype == DataType.BFLOAT16:
        bits = np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
        # round to nearest even, as a float32 -> bfloat16 conversion does
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        data = rounded.astype("<u2").tobytes()
    elif dtype in FP8_TABLES:
        codes = _FP8_CODES[dtype]
        out = bytearray()
        for value in values:
            if math.isnan(value):
                out.append(0x7F)
            elif abs(value) in codes:
                out.append(codes[abs(value)] | (0x80 if math.copysign(1.0, value) < 0 else 0))
            else:
                raise UnsupportedValueError(f"{value!r} is not representable in {DTYPE_TEXT[dtype]}", where)
        data = bytes(out)
    elif dtype == DataType.FLOAT32:
        data = struct.pack(f"<{len(values)}f", *values)
    elif dtype == DataType.FLOAT64:
        data = struct.pack(f"<{len(values)}d", *values)
    elif dtype in INT_NUMPY:
        info = np.iinfo(np.dtype(INT_NUMPY[dtype]))
        for value in values:
            if not info.min <= value <= info.max:
                raise UnsupportedValueError(f"{value} out of range for {DTYPE_TEXT[dtype]}", where)
        data = np.asarray(values, dtype=INT_NUMPY[dtype]).tobytes()
    elif dtype == DataType.BOOL:
        data = bytes(1 if v else 0 for v in values)
    else:
        raise UnsupportedValueError(f"cannot store {DTYPE_TEXT.get(dtype, dtype)} values", where)
    tensor.bytes.values = data
