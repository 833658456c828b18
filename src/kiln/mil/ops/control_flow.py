"""Control flow and list ops (coremltools defs iOS15/control_flow.py): ``cond``, ``while_loop``,
``select`` and the ``make_list`` / ``list_*`` family. Nested blocks arrive compiled in
``ctx.blocks``; calling one with its block inputs runs it and returns its outputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import dtypes
from ..registry import OpContext, register
from ._util import as_bool, as_int, as_ints, as_str

MAX_LOOP_ITERATIONS = 1 << 24


def _truth(pred) -> bool:
    array = np.asarray(pred)
    if array.size != 1:
        raise ValueError(f"predicate must hold one value, got shape {list(array.shape)}")
    return bool(array.reshape(()))


@register("cond", context=True)
def cond(pred, *, ctx: OpContext):
    """MIL ``cond`` (iOS15+): run the first block if ``pred`` is true, else the second; return its outputs."""
    if len(ctx.blocks) != 2:
        raise ValueError(f"cond needs two blocks, has {len(ctx.blocks)}")
    outputs = ctx.blocks[0 if _truth(pred) else 1]()
    return tuple(outputs) if len(outputs) != 1 else outputs[0]


@register("while_loop", context=True, tuple_params=("loop_vars",))
def while_loop(loop_vars, *, ctx: OpContext):
    """MIL ``while_loop`` (iOS15+): while the condition block (first) returns true on the loop
    variables, replace them with the body block's (second) outputs."""
    if len(ctx.blocks) != 2:
        raise ValueError(f"while_loop needs a condition and a body block, has {len(ctx.blocks)}")
    condition, body = ctx.blocks
    values = list(loop_vars)
    for _ in range(MAX_LOOP_ITERATIONS):
        (pred,) = condition(*values)
        if not _truth(pred):
            break
        values = body(*values)
        if len(values) != len(loop_vars):
            raise ValueError(f"body returned {len(values)} values for {len(loop_vars)} loop variables")
    else:
        raise ValueError(f"while_loop did not finish within {MAX_LOOP_ITERATIONS} iterations")
    return tuple(values) if len(values) != 1 else values[0]


@register("select")
def select(cond, a, b):
    """MIL ``select`` (iOS15+): ``a`` where ``cond`` is true, else ``b`` (broadcast)."""
    return np.where(np.asarray(cond, dtype=bool), a, b)


@dataclass(frozen=True)
class MilList:
    """An immutable MIL list value: its elements (None where never written) and element type."""

    items: tuple
    elem_shape: tuple | None
    dtype: np.dtype
    dynamic: bool

    def element(self, index: int):
        if not 0 <= index < len(self.items):
            raise ValueError(f"list index {index} out of range for length {len(self.items)}")
        value = self.items[index]
        if value is None:
            if self.elem_shape is None:
                raise ValueError(f"list element {index} was never written")
            return np.zeros(self.elem_shape, dtype=self.dtype)
        return value

    def with_items(self, items) -> "MilList":
        return MilList(tuple(items), self.elem_shape, self.dtype, self.dynamic)


@register("make_list", tuple_params=("elem_shape",))
def make_list(init_length=1, dynamic_length=True, elem_shape=None, dtype="fp32"):
    """MIL ``make_list`` (iOS15+): an empty list of ``init_length`` elements of ``elem_shape``."""
    length = as_int(init_length, "init_length")
    if length < 0:
        raise ValueError(f"negative init_length {length}")
    storage = dtypes.numpy_for_dtype_string(as_str(dtype, "dtype"))
    if storage is None:
        raise ValueError(f"unknown list dtype {dtype!r}")
    shape = None
    if elem_shape is not None:
        dims: list[int] = []
        for entry in elem_shape:
            entry = np.asarray(entry)
            if entry.dtype.kind not in "iu":  # symbolic (string) dims: shape known at runtime
                dims = None
                break
            dims += [int(v) for v in entry.reshape(-1)]
        shape = tuple(dims) if dims is not None else None
    return MilList((None,) * length, shape, storage, as_bool(dynamic_length))


def _as_list(ls) -> MilList:
    if not isinstance(ls, MilList):
        raise ValueError(f"expected a list value, got {type(ls).__name__}")
    return ls


@register("list_length")
def list_length(ls):
    """MIL ``list_length`` (iOS15+): number of elements, int32."""
    return np.int32(len(_as_list(ls).items))


def _grow(ls: MilList, index: int) -> list:
    items = list(ls.items)
    if index < 0:
        raise ValueError(f"negative list index {index}")
    if index >= len(items):
        if not ls.dynamic:
            raise ValueError(f"index {index} beyond fixed list length {len(items)}")
        items += [None] * (index + 1 - len(items))
    return items


@register("list_write")
def list_write(ls, index, value):
    """MIL ``list_write`` (iOS15+): a new list with ``value`` at ``index`` (dynamic lists grow)."""
    ls = _as_list(ls)
    index = as_int(index, "index")
    items = _grow(ls, index)
    value = np.asarray(value, dtype=ls.dtype)
    if ls.elem_shape is not None and value.shape != ls.elem_shape:
        raise ValueError(f"element shape {list(value.shape)} differs from list's {list(ls.elem_shape)}")
    items[index] = value
    return ls.with_items(items)


@register("list_read")
def list_read(ls, index):
    """MIL ``list_read`` (iOS15+): the element at ``index``."""
    return _as_list(ls).element(as_int(index, "index"))


@register("list_gather")
def list_gather(ls, indices):
    """MIL ``list_gather`` (iOS15+): the elements at ``indices`` stacked into one tensor."""
    ls = _as_list(ls)
    idx = as_ints(indices, "indices")
    if not idx:
        if ls.elem_shape is None:
            raise ValueError("cannot gather zero elements of a list without element shape")
        return np.zeros((0,) + ls.elem_shape, ls.dtype)
    return np.stack([ls.element(i) for i in idx])


@register("list_scatter")
def list_scatter(ls, indices, value):
    """MIL ``list_scatter`` (iOS15+): a new list with ``value[k]`` written at ``indices[k]``."""
    ls = _as_list(ls)
    idx = as_ints(indices, "indices")
    value = np.asarray(value, dtype=ls.dtype)
    if value.shape[:1] != (len(idx),):
        raise ValueError(f"value of shape {list(value.shape)} for {len(idx)} indices")
    items = list(ls.items)
    for k, i in enumerate(idx):
        items = _grow(ls.with_items(items), i)
        items[i] = value[k]
    return ls.with_items(items)
