"""Elementwise binary ops with numpy broadcasting (coremltools defs iOS15/elementwise_binary.py).

Types: fp16, fp32, int32 (comparisons return bool; logical ops take bool)."""

from __future__ import annotations

import numpy as np

from ..registry import prepares, register


def _binary(name, fn, doc, exact=False):
    def impl(x, y):
        return fn(x, y)

    impl.__name__ = name
    impl.__qualname__ = name
    impl.__doc__ = doc
    register(name, exact=exact)(impl)
    return impl


add = _binary("add", np.add, "MIL ``add`` (iOS15+): ``x + y``.")
sub = _binary("sub", np.subtract, "MIL ``sub`` (iOS15+): ``x - y``.")
mul = _binary("mul", np.multiply, "MIL ``mul`` (iOS15+): ``x * y``.")
maximum = _binary("maximum", np.maximum, "MIL ``maximum`` (iOS15+): ``x > y ? x : y``.", exact=True)
minimum = _binary("minimum", np.minimum, "MIL ``minimum`` (iOS15+): ``x > y ? y : x``.", exact=True)
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


# -- prepared kernels (see kiln.mil.registry) ---------------------------------------------------
# Float arithmetic with one constant operand: the constant is converted once, and the kernel
# offers an in-place variant (``kernel.inplace``, used by fusion when the dynamic operand is a
# fresh intermediate) when the result has the dynamic operand's shape and dtype.

_ARITHMETIC = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "maximum": np.maximum,
               "minimum": np.minimum}


def _prepare_arithmetic(op_type):
    ufunc = _ARITHMETIC[op_type]

    def prepare(spec):
        types = {name: spec.input_types.get(name) for name in spec.dynamic}
        if any(t is None or t.dtype.storage != np.float32 for t in types.values()):
            return None
        if spec.dynamic == ("x", "y"):
            x_shape, y_shape = spec.static_shape("x"), spec.static_shape("y")

            def both(x, y):
                return ufunc(x, y)

            both.fresh = True
            if x_shape is not None and y_shape is not None and _broadcasts_into(y_shape, x_shape):
                both.inplace = lambda x, y: ufunc(x, y, out=x)
            return both
        if len(spec.dynamic) != 1:
            return None
        name = spec.dynamic[0]
        other = spec.consts.get("y" if name == "x" else "x")
        if not isinstance(other, np.ndarray) or other.dtype != np.float32:
            return None
        shape = spec.static_shape(name)
        if name == "x":
            def kernel(x):
                return ufunc(x, other)

            inplace = (lambda x: ufunc(x, other, out=x))
        else:
            def kernel(y):
                return ufunc(other, y)

            inplace = (lambda y: ufunc(other, y, out=y))
        kernel.fresh = True
        if shape is not None and _broadcasts_into(other.shape, shape):
            kernel.inplace = inplace
        return kernel

    return prepare


def _broadcasts_into(shape, target) -> bool:
    try:
        return tuple(np.broadcast_shapes(tuple(shape), tuple(target))) == tuple(target)
    except ValueError:
        return False


for _name in _ARITHMETIC:
    prepares(_name)(_prepare_arithmetic(_name))
