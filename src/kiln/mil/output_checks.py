"""Output checks: an op's result coerced to its declared dtype (fp16/bf16 rounding in fp16 mode) and
checked against its declared static shape; the full check on a first run, only the rounding later
once that run showed the op already conforms."""

from __future__ import annotations

from typing import Callable

import numpy as np

from . import dtypes
from .values import TensorType


def make_output_fixer(ttype: TensorType | None, precision: str, *, round_fp16: bool = True) -> Callable:
    """Coerce an op result to its declared dtype and check its declared static shape
    (``round_fp16=False``: the result is known to hold fp16 values already)."""
    if ttype is None:
        return _identity
    storage = ttype.dtype.storage
    expected_shape = ttype.static_shape
    name = ttype.dtype.name
    if name == "string":
        return _identity
    round_fp16 = round_fp16 and precision == dtypes.FP16 and name == "fp16"
    round_bf16 = precision == dtypes.FP16 and name == "bf16"

    def fix(value):
        if type(value) is not np.ndarray or value.dtype != storage:
            value = np.asarray(value)
            if value.dtype != storage:
                if storage.kind in "iu" and value.dtype.kind == "f":
                    if not np.all(np.isfinite(value)):
                        raise ValueError(f"non-finite values cannot be stored as {name}")
                value = value.astype(storage)
        if round_fp16:
            value = dtypes.round_to_fp16(value)
        elif round_bf16:
            value = dtypes.round_to_bf16(value)
        if expected_shape is not None and value.shape != expected_shape:
            raise ValueError(
                f"result has shape {list(value.shape)}, the program declares {list(expected_shape)}"
            )
        return value

    return fix


def _identity(value):
    return value


_round_fp16 = dtypes.round_to_fp16
_round_fp16_in_place = dtypes.round_to_fp16_in_place


class OutputCheck:
    """An output's full fixer plus what every later run needs once the first run showed the op
    already produces the declared dtype and shape (only fp16/bf16 rounding, or nothing)."""

    __slots__ = ("full", "fast", "ttype")

    def __init__(self, ttype: TensorType | None, precision: str, round_fp16: bool):
        self.ttype = ttype
        self.full = make_output_fixer(ttype, precision, round_fp16=round_fp16)
        if ttype is None or ttype.dtype.name == "string":
            self.fast = _identity
        elif precision == dtypes.FP16 and ttype.dtype.name == "bf16":
            self.fast = dtypes.round_to_bf16
        elif round_fp16 and precision == dtypes.FP16 and ttype.dtype.name == "fp16":
            self.fast = _round_fp16
        else:
            self.fast = _identity

    def conforms(self, value) -> bool:
        """Whether ``value`` already has the declared storage dtype and static shape."""
        ttype = self.ttype
        if ttype is None or ttype.dtype.name == "string":
            return True
        shape = ttype.static_shape
        return (type(value) is np.ndarray and value.dtype == ttype.dtype.storage
                and shape is not None and value.shape == shape)


def output_fixer(check: OutputCheck, check_once: bool, owned: bool = False) -> Callable:
    """The output fix of one output: the full check on the first run; when that run showed the
    op already produces the declared dtype and shape (and ``check_once``), only rounding later,
    in place when the kernel's result is ``owned`` (a new array each call: no copy, no peak)."""
    fix = None

    in_place = owned and check.fast is _round_fp16

    def first(value):
        nonlocal fix
        conforms = check.conforms(value)
        # an owned result of the declared dtype and shape is rounded in place on the first run too
        # (the same bits as check.full, without a second full-size array)
        value = _round_fp16_in_place(value) if conforms and in_place else check.full(value)
        if conforms and check_once:
            fix = _round_fp16_in_place if in_place else check.fast
        return value

    fix = first
    return lambda value: fix(value)
