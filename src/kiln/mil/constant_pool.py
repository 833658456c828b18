"""The constant pool: a model's ``const`` and ``constexpr_*`` values, decoded or decompressed once and
shared by every plan built from it; fp16 tensors of some size stay float16 (widened per plan only
where an op needs it)."""

from __future__ import annotations

import numpy as np

from . import dtypes
from .output_checks import make_output_fixer
from .values import TensorType


# fp16 constants from this many elements up are kept as float16 in the constant pool.
COMPACT_MIN_ELEMENTS = 4096


def _compact(value, ttype: TensorType | None):
    """The pool form of a constant: fp16 tensors of some size as float16 (exact: they hold fp16
    values), everything else unchanged."""
    if (ttype is not None and ttype.dtype.name == "fp16" and isinstance(value, np.ndarray)
            and value.dtype == np.float32 and value.size >= COMPACT_MIN_ELEMENTS):
        return value.astype(np.float16)
    return value


def as_pooled(value, ttype: TensorType | None):
    """A const/constexpr result as the pool keeps it: fixed to its declared type (fp16 rounded
    once, in every precision mode) and compacted; an fp16 blob read as float16 with the declared
    shape is taken as it is (no float32 round trip of large weights)."""
    if isinstance(value, str):
        return value
    if (ttype is not None and ttype.dtype.name == "fp16" and type(value) is np.ndarray
            and value.dtype == np.float16 and value.shape == ttype.static_shape):
        return value if value.size >= COMPACT_MIN_ELEMENTS else value.astype(np.float32)
    return _compact(make_output_fixer(ttype, dtypes.FP16)(value), ttype)


def widen(value):
    """``value`` in its storage dtype: float16 arrays (also inside a list) as float32."""
    if isinstance(value, np.ndarray) and value.dtype == np.float16:
        return value.astype(np.float32)
    if isinstance(value, list):
        return [widen(v) for v in value]
    return value


class ConstantPool:
    """The constant values of one model (``const`` and ``constexpr_*`` outputs), shared by every
    plan built from it: each is decoded or decompressed once, and fp16 tensors stay float16."""

    def __init__(self):
        self._values: dict[tuple[str, str], list] = {}

    def get(self, function: str, node: str) -> list | None:
        return self._values.get((function, node))

    def put(self, function: str, node: str, values: list) -> None:
        self._values[(function, node)] = values

    def nbytes(self) -> int:
        return sum(v.nbytes for values in self._values.values() for v in values if isinstance(v, np.ndarray))
