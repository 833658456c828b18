"""Elementwise unary ops (coremltools defs iOS15/elementwise_unary.py, iOS17 variants)."""

from __future__ import annotations

import numpy as np

from .. import dtypes
from ..registry import prepares, register
from ._util import as_float, as_str, erf as _erf


def _unary(name, fn, doc):
    def impl(x):
        return fn(x)

    impl.__name__ = name
    impl.__qualname__ = name
    impl.__doc__ = doc
    register(name)(impl)
    return impl


abs_ = _unary("abs", np.abs, "MIL ``abs`` (iOS15+): ``|x|``; fp16, fp32, int32.")
acos = _unary("acos", np.arccos, "MIL ``acos`` (iOS15+): inverse cosine.")
asin = _unary("asin", np.arcsin, "MIL ``asin`` (iOS15+): inverse sine.")
atan = _unary("atan", np.arctan, "MIL ``atan`` (iOS15+): inverse tangent.")
atanh = _unary("atanh", np.arctanh, "MIL ``atanh`` (iOS15+): inverse hyperbolic tangent.")
ceil = _unary("ceil", np.ceil, "MIL ``ceil`` (iOS15+).")
cos = _unary("cos", np.cos, "MIL ``cos`` (iOS15+).")
cosh = _unary("cosh", np.cosh, "MIL ``cosh`` (iOS15+).")
exp = _unary("exp", np.exp, "MIL ``exp`` (iOS15+): ``e^x``.")
floor = _unary("floor", np.floor, "MIL ``floor`` (iOS15+).")
sin = _unary("sin", np.sin, "MIL ``sin`` (iOS15+).")
sinh = _unary("sinh", np.sinh, "MIL ``sinh`` (iOS15+).")
sqrt = _unary("sqrt", np.sqrt, "MIL ``sqrt`` (iOS15+).")
tan = _unary("tan", np.tan, "MIL ``tan`` (iOS15+).")
tanh = _unary("tanh", np.tanh, "MIL ``tanh`` (iOS15+).")
sign = _unary("sign", np.sign, "MIL ``sign`` (iOS15+): -1, 0 or 1; fp16, fp32, int32.")
square = _unary("square", np.square, "MIL ``square`` (iOS15+): ``x^2``; fp16, fp32, int32.")
round_ = _unary(
    "round", np.round, "MIL ``round`` (iOS15+): nearest integer, ties to even (``0.5`` -> ``0``)."
)


@register("exp2")
def exp2(x):
    """MIL ``exp2`` (iOS15+): ``2^x``; fp16, fp32, int32 (integer result for int32)."""
    if x.dtype.kind in "iu":
        return np.power(2.0, x.astype(np.float64)).astype(x.dtype)
    return np.exp2(x)


@register("erf")
def erf(x):
    """MIL ``erf`` (iOS15+): the Gauss error function."""
    return _erf(x)


@register("clip", exact=True)
def clip(x, alpha, beta):
    """MIL ``clip`` (iOS15+, iOS17 adds alpha < beta validation): ``min(max(x, alpha), beta)``."""
    return np.minimum(np.maximum(x, np.asarray(alpha, x.dtype)), np.asarray(beta, x.dtype))


@register("clip", since="iOS17", exact=True)
def clip_ios17(x, alpha, beta):
    """MIL ``clip`` (iOS17+): as iOS15, and ``alpha`` must be smaller than ``beta``."""
    if not as_float(alpha, "alpha") < as_float(beta, "beta"):
        raise ValueError(f"clip needs alpha < beta, got alpha={alpha}, beta={beta}")
    return clip(x, alpha, beta)


@register("inverse")
def inverse(x, epsilon=1e-4):
    """MIL ``inverse`` (iOS15+, iOS17 epsilon dtype relaxed): ``1 / (x + epsilon)``."""
    return 1.0 / (x + np.asarray(epsilon, x.dtype))


@register("log")
def log(x, epsilon=1e-45):
    """MIL ``log`` (iOS15+, iOS17 epsilon dtype relaxed): ``log(x + epsilon)``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(x + np.asarray(epsilon, x.dtype))


@register("rsqrt")
def rsqrt(x, epsilon=1e-12):
    """MIL ``rsqrt`` (iOS15+, iOS17 epsilon dtype relaxed): ``1 / sqrt(x + epsilon)``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 / np.sqrt(x + np.asarray(epsilon, x.dtype))


@register("logical_not")
def logical_not(x):
    """MIL ``logical_not`` (iOS15+): elementwise NOT of a bool tensor."""
    return np.logical_not(x)


@register("threshold")
def threshold(x, alpha):
    """MIL ``threshold`` (iOS15+): ``max(x, alpha)``; fp16, fp32, int32."""
    return np.maximum(x, np.asarray(alpha, x.dtype))


_CAST_IOS15 = ("int32", "fp16", "fp32", "bool")
_CAST_IOS17 = ("int8", "uint8", "int16", "uint16", "int32", "fp16", "fp32", "bool")


def _cast(x, dtype, allowed):
    name = as_str(dtype, "dtype")
    if name not in allowed:
        raise ValueError(f"cast to {name!r} is not defined in this opset (allowed: {allowed})")
    target = dtypes.BY_NAME[name].storage
    if x.dtype.kind == "f" and target.kind in "iu":
        if not np.all(np.isfinite(x)):
            raise ValueError(f"cannot cast non-finite values to {name}")
        x = np.trunc(x)
    if target == np.bool_:
        return x != 0
    return x.astype(target)


@register("cast")
def cast(x, dtype):
    """MIL ``cast`` (iOS15): to ``int32``, ``fp16``, ``fp32`` or ``bool`` (float -> int truncates)."""
    return _cast(x, dtype, _CAST_IOS15)


@register("cast", since="iOS17")
def cast_ios17(x, dtype):
    """MIL ``cast`` (iOS17+): also to ``int8``, ``uint8``, ``int16``, ``uint16``."""
    return _cast(x, dtype, _CAST_IOS17)


# -- prepared kernels (see kiln.mil.registry) ---------------------------------------------------


def _prepare_cast(allowed):
    def prepare(spec):
        """Between float types (all stored as float32) a cast moves no data: the plan's output
        rounding gives the narrower type; other casts keep the plain function."""
        source = spec.input_types.get("x")
        try:
            name = as_str(spec.consts.get("dtype"), "dtype")
        except ValueError:
            return None
        if spec.dynamic != ("x",) or source is None or name not in allowed:
            return None
        target = dtypes.BY_NAME[name].storage
        if source.dtype.storage != target or target.kind != "f":
            return None
        return _identity

    return prepare


def _identity(x):
    return x


prepares("cast")(_prepare_cast(_CAST_IOS15))
prepares("cast", since="iOS17")(_prepare_cast(_CAST_IOS17))


def _prepare_clip(validate):
    def prepare(spec):
        """``alpha``/``beta`` converted (and, iOS17, validated) once."""
        source = spec.input_types.get("x")
        if spec.dynamic != ("x",) or source is None or "alpha" not in spec.consts or "beta" not in spec.consts:
            return None
        alpha, beta = spec.consts["alpha"], spec.consts["beta"]
        try:
            if validate and not as_float(alpha, "alpha") < as_float(beta, "beta"):
                return None
            low = np.asarray(alpha, source.dtype.storage)
            high = np.asarray(beta, source.dtype.storage)
        except (ValueError, TypeError):
            return None
        return lambda x: np.minimum(np.maximum(x, low), high)

    return prepare


prepares("clip")(_prepare_clip(validate=False))
prepares("clip", since="iOS17")(_prepare_clip(validate=True))


def _prepare_ufunc(ufunc):
    def prepare(spec):
        """A float ufunc called directly, with an in-place variant for fusion."""
        source = spec.input_types.get("x")
        if spec.dynamic != ("x",) or source is None or source.dtype.storage != np.float32:
            return None

        def kernel(x):
            return ufunc(x)

        kernel.fresh = True
        kernel.inplace = lambda x: ufunc(x, out=x)
        return kernel

    return prepare


for _name, _ufunc in (("tanh", np.tanh), ("sqrt", np.sqrt), ("exp", np.exp), ("abs", np.abs),
                      ("square", np.square), ("sin", np.sin), ("cos", np.cos)):
    prepares(_name)(_prepare_ufunc(_ufunc))
