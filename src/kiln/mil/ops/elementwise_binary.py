"""Elementwise binary ops with numpy broadcasting (coremltools defs iOS15/elementwise_binary.py).

Types: fp16, fp32, int32 (comparisons return bool; logical ops take bool)."""

from __future__ import annotations

import numpy as np

from ..registry import register


def _binary(name, fn, doc):
    def impl(x, y):
        return fn(x, y)

    impl.__name__ = name
    impl.__qualname__ = name
    impl.__doc__ = doc
    register(name)(impl)
    return impl


add = _binary("add", np.add, "MIL ``add`` (iOS15+): ``x + y``.")
sub = _binary("sub", np.subtract, "MIL ``sub`` (iOS15+): ``x - y``.")
mul = _binary("mul", np.multiply, "MIL ``mul`` (iOS15+): ``x * y``.")
maximum = _binary("maximum", np.maximum, "MIL ``maximum`` (iOS15+): ``x > y ? x : y``.")
minimum = _binary("minimum", np.minimum, "MIL ``minimum`` (iOS15+): ``x > y ? y : x``.")
equal = _binary("equal", np.equal, "MIL ``equal`` (iOS15+): ``x == y`` as bool.")
not_equal = _binary("not_equal", np.not_equal, "MIL ``not_equal`` (iOS15+): ``x != y`` as bool.")
greater = _binary("greater", np.greater, "MIL ``greater`` (iOS15+): ``x > y`` as bool.")
greater_equal = _binary("greater_equal", np.greater_equal, "MIL ``greater_equal`` (iOS15+): ``x >= y``.")
less = _binary("less", np.less, "MIL ``less`` (iOS15+): ``x < y`` as bool.")
less_equal = _binary("less_equal", np.less_equal, "MIL ``less_equal`` (iOS15+): ``x <= y`` as bool.")
logical_and = _binary("logical_and", np.logical_and, "MIL ``logical_and`` (iOS15+) on bool tensors.")
logical_or = _binary("logical_or", np.logical_or, "MIL ``logical_or`` (iOS15+) on bool tensors.")
logical_xor = _binary("logical_xor", np.logical_xor, "MIL ``logical_xor`` (iOS15+) on bool tensors.")


@register("real_div")
def real_div(x, y):
    """MIL ``real_div`` (iOS15+): ``x / y``; for int32 the quotient is truncated toward zero."""
    if x.dtype.kind in "iu" and y.dtype.kind in "iu":
        if np.any(y == 0):
            raise ValueError("integer division by zero")
        return np.trunc(np.true_divide(x, y)).astype(np.result_type(x, y))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.true_divide(x, y)


@register("floor_div")
def floor_div(x, y):
    """MIL ``floor_div`` (iOS15+): ``x / y`` rounded toward negative infinity."""
    if x.dtype.kind in "iu" and y.dtype.kind in "iu":
        if np.any(y == 0):
            raise ValueError("integer division by zero")
        return np.floor_divide(x, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.floor(np.true_divide(x, y))


@register("mod")
def mod(x, y):
    """MIL ``mod`` (iOS15+): ``x % y`` with the sign of ``y`` (Python / numpy semantics)."""
    if x.dtype.kind in "iu" and y.dtype.kind in "iu" and np.any(y == 0):
        raise ValueError("integer modulo by zero")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.mod(x, y)


@register("pow")
def pow_(x, y):
    """MIL ``pow`` (iOS15+): ``x ^ y``."""
    if x.dtype.kind in "iu" and y.dtype.kind in "iu" and np.any(y < 0):
        raise ValueError("integer power with a negative exponent")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.power(x, y)
