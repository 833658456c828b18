"""Reader of MIL blob storage v2 (``weights/weight.bin``), in pure Python and numpy.

Layout (little-endian)::

    file header, 64 bytes:  u32 count, u32 version (= 2), zeros
    per blob, 64-byte aligned:
        record, 64 bytes:   u32 sentinel 0xDEADBEEF, u32 dtype code, u64 size in bytes,
                            u64 data offset (absolute), u64 padding bits (sub-byte types), zeros
        data, then zero padding to the next 64-byte boundary

A ``BLOBFILE(offset=...)`` in the program points at a record. Every read is bounds-checked: a
wrong sentinel, an unknown dtype code, an offset or size outside the file, or a size that does not
hold a whole number of elements raises :class:`BlobFormatError` naming the file and offset.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from . import dtypes
from .errors import BlobFormatError

HEADER_SIZE = 64
RECORD_SIZE = 64
SENTINEL = 0xDEADBEEF
STORAGE_VERSION = 2

# blob dtype code -> MIL dtype name
BLOB_DTYPES: dict[int, str] = {
    1: "fp16",
    2: "fp32",
    3: "uint8",
    4: "int8",
    5: "bf16",
    6: "int16",
    7: "uint16",
    8: "int4",
    9: "uint1",
    10: "uint2",
    11: "uint4",
    12: "uint3",
    13: "uint6",
    14: "int32",
    15: "uint32",
    16: "fp8e4m3fn",
    17: "fp8e5m2",
}
BLOB_CODES: dict[str, int] = {name: code for code, name in BLOB_DTYPES.items()}

_RAW_NUMPY = {
    "fp16": np.dtype("<f2"),
    "fp32": np.dtype("<f4"),
    "uint8": np.dtype("u1"),
    "int8": np.dtype("i1"),
    "bf16": np.dtype("<u2"),
    "int16": np.dtype("<i2"),
    "uint16": np.dtype("<u2"),
    "int32": np.dtype("<i4"),
    "uint32": np.dtype("<u4"),
    "fp8e4m3fn": np.dtype("u1"),
    "fp8e5m2": np.dtype("u1"),
}
_SUB_BYTE_BITS = {"int4": 4, "uint1": 1, "uint2": 2, "uint3": 3, "uint4": 4, "uint6": 6}


@dataclass(frozen=True)
class BlobRecord:
    """Metadata of one blob: where its record and data are, its dtype and element count."""

    offset: int
    dtype: str
    size_bytes: int
    data_offset: int
    padding_bits: int
    count: int


class BlobFile:
    """A read-only, memory-mapped ``weight.bin``. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self._file = open(self.path, "rb")
        except OSError as exc:
            raise BlobFormatError(f"cannot open weight file: {exc.strerror}", self.path) from None
        try:
            self.size = os.fstat(self._file.fileno()).st_size
            if self.size < HEADER_SIZE:
                raise BlobFormatError(
                    f"file is {self.size} bytes, shorter than the {HEADER_SIZE}-byte header",
                    self.path,
                    0,
                )
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        except BaseException:
            self._file.close()
            raise
        self.count, self.version = struct.unpack_from("<II", self._map, 0)
        if self.version != STORAGE_VERSION:
            self.close()
            raise BlobFormatError(
                f"unsupported blob storage version {self.version} (expected {STORAGE_VERSION})",
                self.path,
                0,
            )

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        if getattr(self, "_map", None) is not None:
            self._map.close()
            self._map = None
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "BlobFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- records -----------------------------------------------------------------------------
    def record(self, offset: int) -> BlobRecord:
        """Parse and validate the record at ``offset``."""
        if self._map is None:
            raise BlobFormatError("weight file is closed", self.path, offset)
        if not isinstance(offset, int) or offset < HEADER_SIZE or offset + RECORD_SIZE > self.size:
            raise BlobFormatError(
                f"record offset outside the file (file size {self.size})", self.path, offset
            )
        if offset % 64:
            raise BlobFormatError("record offset is not 64-byte aligned", self.path, offset)
        sentinel, code, size_bytes, data_offset, padding_bits = struct.unpack_from(
            "<IIQQQ", self._map, offset
        )
        if sentinel != SENTINEL:
            raise BlobFormatError(
                f"bad record sentinel 0x{sentinel:08X} (expected 0x{SENTINEL:08X})", self.path, offset
            )
        dtype = BLOB_DTYPES.get(code)
        if dtype is None:
            raise BlobFormatError(f"unknown blob dtype code {code}", self.path, offset)
        if data_offset < offset + RECORD_SIZE or data_offset > self.size:
            raise BlobFormatError(
                f"data offset {data_offset} outside the file or inside its own record", self.path, offset
            )
        if size_bytes > self.size - data_offset:
            raise BlobFormatError(
                f"data of {size_bytes} bytes at {data_offset} runs past the end of the file "
                f"({self.size} bytes)",
                self.path,
                offset,
            )
        if dtype in _SUB_BYTE_BITS:
            nbits = _SUB_BYTE_BITS[dtype]
            total_bits = size_bytes * 8 - padding_bits
            if padding_bits >= 8 or total_bits < 0 or total_bits % nbits:
                raise BlobFormatError(
                    f"{dtype} blob of {size_bytes} bytes with {padding_bits} padding bits does not "
                    f"hold a whole number of {nbits}-bit elements",
                    self.path,
                    offset,
                )
            count = total_bits // nbits
        else:
            itemsize = _RAW_NUMPY[dtype].itemsize
            if size_bytes % itemsize:
                raise BlobFormatError(
                    f"{dtype} blob size {size_bytes} is not a multiple of {itemsize}", self.path, offset
                )
            count = size_bytes // itemsize
        return BlobRecord(offset, dtype, size_bytes, data_offset, padding_bits, count)

    def records(self) -> Iterator[BlobRecord]:
        """Walk all ``count`` records in file order (each next record 64-byte aligned after data)."""
        offset = HEADER_SIZE
        for _ in range(self.count):
            rec = self.record(offset)
            yield rec
            end = rec.data_offset + rec.size_bytes
            offset = (end + 63) // 64 * 64

    # -- data --------------------------------------------------------------------------------
    def raw(self, offset: int) -> tuple[BlobRecord, np.ndarray]:
        """The record at ``offset`` and a copy of its undecoded elements.

        Byte-sized types come back in their little-endian numpy type (bf16 and fp8 as their bit
        patterns, uint16/uint8); sub-byte types unpacked to int8/uint8."""
        rec = self.record(offset)
        data = np.frombuffer(self._map, dtype=np.uint8, count=rec.size_bytes, offset=rec.data_offset)
        if rec.dtype in _SUB_BYTE_BITS:
            values = dtypes.unpack_bits(data, _SUB_BYTE_BITS[rec.dtype], rec.count, rec.dtype == "int4")
        else:
            values = data.view(_RAW_NUMPY[rec.dtype]).copy()
        return rec, values

    def read(self, offset: int, expected_dtype: str | None = None) -> np.ndarray:
        """Decoded 1-D values of the blob at ``offset``.

        fp16 comes back as float16, bf16 and fp8 decoded to float32, everything else in its numpy
        type. ``expected_dtype`` (a MIL dtype name) must match the blob's own dtype code."""
        rec, values = self.raw(offset)
        if expected_dtype is not None and expected_dtype != rec.dtype:
            raise BlobFormatError(
                f"program declares {expected_dtype} but the blob holds {rec.dtype}", self.path, offset
            )
        if rec.dtype == "bf16":
            return dtypes.bf16_bits_to_float32(values)
        if rec.dtype == "fp8e4m3fn":
            return dtypes.FP8E4M3FN_TABLE[values]
        if rec.dtype == "fp8e5m2":
            return dtypes.FP8E5M2_TABLE[values]
        return values
