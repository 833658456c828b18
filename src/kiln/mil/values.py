"""Decoding of MIL ``Value`` protobufs (immediate values and ``BLOBFILE`` references) to numpy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kiln.coreml.blob import BlobFile
from kiln.coreml.dtypes import RAW_NUMPY, decode_narrow_float
from kiln.coreml.manifest import blob_file

from . import dtypes
from .errors import ModelFormatError


@dataclass(frozen=True)
class TensorType:
    """A MIL tensor type: dtype and shape (``None`` for a dimension unknown at compile time)."""

    dtype: dtypes.MilDType
    shape: tuple[int | None, ...] | None  # None: unknown rank

    @property
    def static_shape(self) -> tuple[int, ...] | None:
        if self.shape is None or any(d is None for d in self.shape):
            return None
        return self.shape  # type: ignore[return-value]

    def describe(self) -> str:
        if self.shape is None:
            return f"{self.dtype.name}[*]"
        return f"{self.dtype.name}[{', '.join('?' if d is None else str(d) for d in self.shape)}]"


def tensor_type_from_proto(value_type, where: str) -> TensorType | None:
    """The TensorType of a ``ValueType`` proto, or None for non-tensor types (lists, states...)."""
    kind = value_type.WhichOneof("type")
    if kind == "stateType":
        return tensor_type_from_proto(value_type.stateType.wrappedType, where)
    if kind != "tensorType":
        return None
    tt = value_type.tensorType
    dtype = dtypes.BY_PROTO.get(tt.dataType)
    if dtype is None:
        raise ModelFormatError(f"{where}: unknown MIL data type {tt.dataType}")
    if tt.rank < 0:
        return TensorType(dtype, None)
    if len(tt.dimensions) != tt.rank:
        raise ModelFormatError(
            f"{where}: tensor type of rank {tt.rank} lists {len(tt.dimensions)} dimensions"
        )
    shape: list[int | None] = []
    for dim in tt.dimensions:
        if dim.WhichOneof("dimension") == "constant":
            shape.append(int(dim.constant.size))
        else:
            shape.append(None)
    return TensorType(dtype, tuple(shape))


class BlobStore:
    """Resolves ``@model_path/...`` blob references below a model root and caches open files."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._files: dict[Path, BlobFile] = {}

    def resolve(self, file_name: str) -> Path:
        """The file ``file_name`` names below the root; never outside it, never through a link."""
        return blob_file(self.root, file_name)

    def file(self, file_name: str) -> BlobFile:
        path = self.resolve(file_name)
        blob = self._files.get(path)
        if blob is None:
            blob = self._files[path] = BlobFile(path)
        return blob

    def close(self) -> None:
        for blob in self._files.values():
            blob.close()
        self._files.clear()

    def __enter__(self) -> "BlobStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _element_count(shape: tuple[int, ...]) -> int:
    count = 1
    for d in shape:
        count *= d
    return count


def _immediate_tensor(tensor_value, ttype: TensorType, where: str) -> np.ndarray | str:
    shape = ttype.static_shape
    if shape is None:
        raise ModelFormatError(f"{where}: constant with unknown shape {ttype.describe()}")
    count = _element_count(shape)
    dtype = ttype.dtype
    kind = tensor_value.WhichOneof("value")
    if kind is None:
        if count != 0:
            raise ModelFormatError(f"{where}: constant {ttype.describe()} has no values")
        return np.zeros(shape, dtype=dtype.storage)
    if kind == "strings":
        values = [s for s in tensor_value.strings.values]
        if len(values) != count:
            raise ModelFormatError(f"{where}: {len(values)} strings for shape {shape}")
        if shape == ():
            return values[0]
        return np.array(values, dtype=np.str_).reshape(shape)
    if kind == "bytes":
        raw = tensor_value.bytes.values
        if dtype.name in dtypes.SUB_BYTE:
            needed = (count * dtype.bits + 7) // 8
            if len(raw) < needed:
                raise ModelFormatError(
                    f"{where}: {len(raw)} bytes cannot hold {count} {dtype.name} values"
                )
            array = dtypes.unpack_bits(np.frombuffer(raw, np.uint8), dtype.bits, count, dtype.signed)
        else:
            raw_dtype = RAW_NUMPY.get(dtype.name)
            if raw_dtype is None:
                raise ModelFormatError(f"{where}: {dtype.name} cannot be stored as bytes")
            if len(raw) != count * raw_dtype.itemsize:
                raise ModelFormatError(
                    f"{where}: {len(raw)} bytes for {count} {dtype.name} values of shape {shape}"
                )
            array = decode_narrow_float(dtype.name, np.frombuffer(raw, raw_dtype).copy())
    else:
        values = getattr(tensor_value, kind).values
        if len(values) != count:
            raise ModelFormatError(f"{where}: {len(values)} values for shape {shape}")
        array = np.array(values)
        if dtype.is_int and array.size and np.issubdtype(array.dtype, np.integer):
            info = np.iinfo(dtype.storage)
            if array.min() < info.min or array.max() > info.max:
                raise ModelFormatError(f"{where}: values out of range for {dtype.name}")
    if dtype.name == "string":
        raise ModelFormatError(f"{where}: string constant stored as {kind}")
    return np.asarray(array).astype(dtype.storage, copy=False).reshape(shape)


def decode_value(value, blobs: BlobStore | None, where: str, *, keep_fp16: bool = False):
    """Decode a ``MIL_pb2.Value`` to the executor's representation.

    Tensors become numpy arrays in their storage dtype (0-d for scalars), string scalars Python
    ``str``, immediate lists and tuples Python lists, dictionaries Python dicts. ``keep_fp16``:
    an fp16 blob stays float16 (half the memory; the constant pool widens it where needed)."""
    type_kind = value.type.WhichOneof("type")
    value_kind = value.WhichOneof("value")
    if type_kind == "tensorType":
        ttype = tensor_type_from_proto(value.type, where)
        assert ttype is not None
        if value_kind == "immediateValue":
            imm = value.immediateValue
            if imm.WhichOneof("value") != "tensor":
                raise ModelFormatError(f"{where}: tensor-typed value holds a {imm.WhichOneof('value')}")
            return _immediate_tensor(imm.tensor, ttype, where)
        if value_kind == "blobFileValue":
            if blobs is None:
                raise ModelFormatError(f"{where}: blob reference but the model has no weights")
            shape = ttype.static_shape
            if shape is None:
                raise ModelFormatError(f"{where}: blob constant with unknown shape {ttype.describe()}")
            ref = value.blobFileValue
            data = blobs.file(ref.fileName).read(int(ref.offset), ttype.dtype.name, shared=True)
            count = _element_count(shape)
            if data.size != count:
                raise ModelFormatError(
                    f"{where}: blob at offset {ref.offset} of {blobs.resolve(ref.fileName)} holds "
                    f"{data.size} elements, the program declares {ttype.describe()} ({count})"
                )
            if keep_fp16 and data.dtype == np.float16:
                return data.reshape(shape)
            return data.astype(ttype.dtype.storage, copy=False).reshape(shape)
        raise ModelFormatError(f"{where}: tensor value without data")
    if value_kind == "immediateValue":
        imm = value.immediateValue
        imm_kind = imm.WhichOneof("value")
        if imm_kind in ("list", "tuple"):
            return [decode_value(v, blobs, where) for v in getattr(imm, imm_kind).values]
        if imm_kind == "dictionary":
            return {
                _hashable(decode_value(kv.key, blobs, where)): decode_value(kv.value, blobs, where)
                for kv in imm.dictionary.values
            }
    raise ModelFormatError(f"{where}: unsupported value of type {type_kind!r}")


def _hashable(key):
    if isinstance(key, np.ndarray):
        return key.item() if key.ndim == 0 else tuple(key.tolist())
    return key
