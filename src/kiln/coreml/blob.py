"""MIL blob storage v2 (``weights/weight.bin``): exact validation, reading and writing.

Layout (little-endian), as coremltools' `_BlobStorageWriter` and Apple's tools write it::

    file header, 64 bytes:  u32 count, u32 version (= 2), 56 zero bytes
    per blob, at a 64-byte aligned offset:
        record, 64 bytes:   u32 sentinel 0xDEADBEEF, u32 dtype code, u64 size in bytes,
                            u64 data offset (= record offset + 64), u64 padding bits (sub-byte
                            types: unused high bits of the last byte), 32 zero bytes
        data, then zero padding to the next 64-byte boundary (none after the last blob)

A ``BLOBFILE(offset=...)`` in the program points at a record. Every field is checked exactly: a wrong
sentinel, an unknown dtype code, a data offset other than record + 64, non-zero reserved bytes, a
size outside the file, padding bits that do not fit the dtype all raise :class:`BlobFormatError`
naming the file and the record's offset. :meth:`BlobFile.validate` walks the whole file (count,
padding, the end of the file); the compiler runs it on every weight file it copies.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from kiln.coreml import dtypes
from kiln.coreml.errors import BlobFormatError

HEADER_SIZE = 64
RECORD_SIZE = 64
ALIGNMENT = 64
SENTINEL = 0xDEADBEEF
STORAGE_VERSION = 2
_RECORD = struct.Struct("<IIQQQ")  # sentinel, dtype code, size, data offset, padding bits
_SUB_BYTE_BITS = {name: dtypes.BY_NAME[name].bits for name in dtypes.SUB_BYTE}


def _aligned(offset: int) -> int:
    return (offset + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


@dataclass(frozen=True)
class BlobRecord:
    """Metadata of one blob: where its record and data are, its dtype and element count."""

    offset: int
    dtype: str
    size_bytes: int
    data_offset: int
    padding_bits: int
    count: int

    @property
    def end(self) -> int:
        return self.data_offset + self.size_bytes


def element_count(dtype: str, size_bytes: int, padding_bits: int) -> int | str:
    """The number of ``dtype`` elements ``size_bytes`` bytes hold, or why they cannot."""
    if dtype in _SUB_BYTE_BITS:
        nbits = _SUB_BYTE_BITS[dtype]
        total_bits = size_bytes * 8 - padding_bits
        if padding_bits >= 8 or total_bits < 0 or total_bits % nbits:
            return (f"{dtype} blob of {size_bytes} bytes with {padding_bits} padding bits does not "
                    f"hold a whole number of {nbits}-bit elements")
        return total_bits // nbits
    if padding_bits:
        return f"{dtype} blob declares {padding_bits} padding bits (only sub-byte types have any)"
    itemsize = dtypes.RAW_NUMPY[dtype].itemsize
    if size_bytes % itemsize:
        return f"{dtype} blob size {size_bytes} is not a multiple of {itemsize}"
    return size_bytes // itemsize


class BlobFile:
    """A read-only, memory-mapped ``weight.bin``. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._map = None
        try:
            # O_NOFOLLOW: a weight file that is a symlink is refused, never followed
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            reason = "is a symlink (kiln never follows links in a model)" if exc.errno == 40 else exc.strerror
            raise BlobFormatError(f"cannot open weight file: {reason}", self.path) from None
        self._file = os.fdopen(fd, "rb")
        self._private = None  # the copy-on-write mapping :meth:`raw` shares data from
        try:
            self.size = os.fstat(self._file.fileno()).st_size
            if self.size < HEADER_SIZE:
                raise BlobFormatError(
                    f"file is {self.size} bytes, shorter than the {HEADER_SIZE}-byte header", self.path, 0)
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
            self.count, self.version = struct.unpack_from("<II", self._map, 0)
            if self.version != STORAGE_VERSION:
                raise BlobFormatError(
                    f"unsupported blob storage version {self.version} (expected {STORAGE_VERSION})", self.path, 0)
            if any(self._map[8:HEADER_SIZE]):
                raise BlobFormatError("reserved bytes 8..63 of the file header are not zero", self.path, 0)
        except BaseException:
            self.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        # Arrays shared from the private mapping keep it alive (and unmap it when they go):
        # the file's handle is dropped, never closed under them.
        self._private = None
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
        """Parse and validate the record at ``offset``, every field exactly."""
        if self._map is None:
            raise BlobFormatError("weight file is closed", self.path, offset)
        if not isinstance(offset, int) or offset < HEADER_SIZE or offset + RECORD_SIZE > self.size:
            raise BlobFormatError(f"record offset outside the file (file size {self.size})", self.path, offset)
        if offset % ALIGNMENT:
            raise BlobFormatError("record offset is not 64-byte aligned", self.path, offset)
        sentinel, code, size_bytes, data_offset, padding_bits = _RECORD.unpack_from(self._map, offset)
        if sentinel != SENTINEL:
            raise BlobFormatError(
                f"bad record sentinel 0x{sentinel:08X} (expected 0x{SENTINEL:08X})", self.path, offset)
        dtype = dtypes.BLOB_DTYPES.get(code)
        if dtype is None:
            raise BlobFormatError(f"unknown blob dtype code {code}", self.path, offset)
        if data_offset != offset + RECORD_SIZE:
            raise BlobFormatError(
                f"data offset {data_offset} is not the record's end {offset + RECORD_SIZE} "
                f"(storage v2 puts the data right after its 64-byte record)", self.path, offset)
        if any(self._map[offset + _RECORD.size: offset + RECORD_SIZE]):
            raise BlobFormatError("reserved bytes of the record are not zero", self.path, offset)
        if size_bytes > self.size - data_offset:
            raise BlobFormatError(
                f"data of {size_bytes} bytes at {data_offset} runs past the end of the file "
                f"({self.size} bytes)", self.path, offset)
        count = element_count(dtype, size_bytes, padding_bits)
        if isinstance(count, str):
            raise BlobFormatError(count, self.path, offset)
        return BlobRecord(offset, dtype, size_bytes, data_offset, padding_bits, count)

    def records(self) -> Iterator[BlobRecord]:
        """Walk all ``count`` records in file order (each next record 64-byte aligned after data)."""
        offset = HEADER_SIZE
        for _ in range(self.count):
            rec = self.record(offset)
            yield rec
            offset = _aligned(rec.end)

    def validate(self) -> dict[int, BlobRecord]:
        """Check the whole file: ``count`` valid records back to back, zero padding between them,
        nothing after the last one. Returns the records by offset."""
        found: dict[int, BlobRecord] = {}
        end = HEADER_SIZE
        for rec in self.records():
            if any(self._map[end:rec.offset]):
                raise BlobFormatError("padding before the record is not zero", self.path, rec.offset)
            found[rec.offset] = rec
            end = rec.end
        if self.size not in (end, _aligned(end)) or any(self._map[end:self.size]):
            raise BlobFormatError(
                f"{self.size - end} unexpected bytes after the last of {self.count} records "
                f"(ends at {end})", self.path, max(found) if found else None)
        return found

    # -- data --------------------------------------------------------------------------------
    def raw(self, offset: int, *, shared: bool = False) -> tuple[BlobRecord, np.ndarray]:
        """The record at ``offset`` and a copy of its undecoded elements.

        Byte-sized types come back in their little-endian numpy type (bf16 and fp8 as their bit
        patterns, uint16/uint8); sub-byte types unpacked to int8/uint8. ``shared``: byte-sized
        elements are a writeable view of a private, copy-on-write mapping of the file instead of
        a copy (no copy, no page of it allocated until written; a write never reaches the
        file): how the executor holds a GB of weights without reading them twice."""
        rec = self.record(offset)
        if shared and rec.dtype not in _SUB_BYTE_BITS:
            if self._private is None:
                self._private = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_COPY)
            return rec, np.frombuffer(self._private, dtype=dtypes.RAW_NUMPY[rec.dtype], count=rec.count,
                                      offset=rec.data_offset)
        data = np.frombuffer(self._map, dtype=np.uint8, count=rec.size_bytes, offset=rec.data_offset)
        if rec.dtype in _SUB_BYTE_BITS:
            values = dtypes.unpack_bits(data, _SUB_BYTE_BITS[rec.dtype], rec.count, rec.dtype == "int4")
        else:
            values = data.view(dtypes.RAW_NUMPY[rec.dtype]).copy()
        self._release(rec.data_offset, rec.size_bytes)
        return rec, values

    def _release(self, offset: int, size: int) -> None:
        """Drop the mapped pages of a record just copied from this process's resident set (the
        page cache keeps them), so reading a large model does not hold it twice in RSS."""
        start = offset - offset % mmap.PAGESIZE
        end = offset + size
        end -= end % mmap.PAGESIZE  # never a page that also holds the next record's bytes
        if end > start and hasattr(mmap, "MADV_DONTNEED"):
            try:
                self._map.madvise(mmap.MADV_DONTNEED, start, end - start)
            except (OSError, ValueError):
                pass  # only a memory optimisation

    def read(self, offset: int, expected_dtype: str | None = None, *, shared: bool = False) -> np.ndarray:
        """Decoded 1-D values of the blob at ``offset``.

        fp16 comes back as float16, bf16 and fp8 decoded to float32, everything else in its numpy
        type. ``expected_dtype`` (a MIL dtype name) must match the blob's own dtype code.
        ``shared``: see :meth:`raw`."""
        rec, values = self.raw(offset, shared=shared)
        if expected_dtype is not None and expected_dtype != rec.dtype:
            raise BlobFormatError(
                f"program declares {expected_dtype} but the blob holds {rec.dtype}", self.path, offset)
        return dtypes.decode_narrow_float(rec.dtype, values)


class BlobWriter:
    """Writes a ``weight.bin`` in the layout above (byte-identical to coremltools' writer).

    ``write(dtype, values)`` returns the record's offset; :meth:`close` fixes the header count.
    Float types take float values or their bit patterns as unsigned integers of the same width."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._handle = open(self.path, "wb")
        self._handle.write(struct.pack("<II", 0, STORAGE_VERSION) + bytes(HEADER_SIZE - 8))
        self._end = HEADER_SIZE
        self.count = 0

    def write(self, dtype: str, values) -> int:
        code = dtypes.BLOB_CODES.get(dtype)
        if code is None:
            raise BlobFormatError(f"no blob dtype code for {dtype!r}", self.path)
        values = np.asarray(values).reshape(-1)
        if dtype in _SUB_BYTE_BITS:
            nbits = _SUB_BYTE_BITS[dtype]
            data = dtypes.pack_bits(values, nbits)
            padding_bits = len(data) * 8 - values.size * nbits
        elif dtype == "bf16" and values.dtype != np.uint16:
            data, padding_bits = dtypes.float_to_bf16_bits(values).tobytes(), 0
        elif values.dtype.kind in "ui" and dtypes.BY_NAME[dtype].is_float:
            # integers for a float type are its bit patterns (as coremltools' fp16 writer takes them)
            raw = dtypes.RAW_NUMPY[dtype]
            if values.dtype.itemsize != raw.itemsize:
                raise BlobFormatError(f"{values.dtype} values are not {dtype} bit patterns", self.path)
            data, padding_bits = values.astype(values.dtype.newbyteorder("<")).tobytes(), 0
        else:
            data, padding_bits = values.astype(dtypes.RAW_NUMPY[dtype]).tobytes(), 0
        offset = _aligned(self._end)
        self._handle.write(bytes(offset - self._end))
        self._handle.write(_RECORD.pack(SENTINEL, code, len(data), offset + RECORD_SIZE, padding_bits)
                           + bytes(RECORD_SIZE - _RECORD.size))
        self._handle.write(data)
        self._end = offset + RECORD_SIZE + len(data)
        self.count += 1
        return offset

    def close(self) -> None:
        if self._handle is not None:
            self._handle.seek(0)
            self._handle.write(struct.pack("<I", self.count))
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "BlobWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
