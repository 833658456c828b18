"""The executor's value model: MIL data types, their numpy storage, and precision modes.

Every MIL tensor is held as a numpy array. Floating point tensors of any MIL width (fp16, bf16,
fp8, fp32) are stored as ``float32``; in ``fp16`` precision mode an op output declared ``fp16`` is
rounded through IEEE half precision, emulating Core ML's fp16 storage. Integer types keep their
numpy type (sub-byte types unpacked to ``int8``/``uint8``), ``bool`` is ``bool`` and strings are
Python ``str`` (scalars) or numpy unicode arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import PrecisionError

# Precision modes.
FP32 = "fp32"
FP16 = "fp16"
PRECISIONS = (FP32, FP16)


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    return precision


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
BY_NAME["fp64"] = BY_NAME["fp64"]
SUB_BYTE = frozenset({"int4", "uint1", "uint2", "uint3", "uint4", "uint6"})


def dtype_from_name(name: str) -> MilDType | None:
    """The MIL dtype spelled ``name`` (as in ``cast(dtype=...)``), or None."""
    return BY_NAME.get(name)


def numpy_for_dtype_string(name: str) -> np.dtype | None:
    """Storage numpy dtype for a MIL dtype string, or None when unknown."""
    d = BY_NAME.get(name)
    return d.storage if d is not None else None


# --- rounding to narrow float formats (fp16 precision mode, and bf16 / fp8 constants) ---------


def round_to_fp16(a: np.ndarray) -> np.ndarray:
    """Round float values to the nearest IEEE half and widen back to float32."""
    return a.astype(np.float16).astype(np.float32)


def round_to_bf16(a: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (round-to-nearest-even) and widen back to float32."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    nan = np.isnan(a)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    rounded = ((bits + rounding) & np.uint32(0xFFFF0000)).view(np.float32)
    return np.where(nan, np.float32(np.nan), rounded).astype(np.float32)


def bf16_bits_to_float32(raw: np.ndarray) -> np.ndarray:
    """Decode raw bfloat16 bit patterns (uint16) to float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _fp8_table(exp_bits: int, man_bits: int, bias: int, ieee_special: bool) -> np.ndarray:
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


FP8E4M3FN_TABLE = _fp8_table(4, 3, 7, ieee_special=False)
FP8E5M2_TABLE = _fp8_table(5, 2, 15, ieee_special=True)


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
