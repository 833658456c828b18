"""Linear algebra ops (coremltools defs iOS15/linear.py; iOS17 relaxes dtypes only)."""

from __future__ import annotations

import numpy as np

from ..registry import prepares, register
from ._util import as_bool, as_str
from .conv import float32_source


@register("linear")
def linear(x, weight, bias=None):
    """MIL ``linear`` (iOS15+, iOS17): ``x @ weight.T + bias`` with weight ``[D_out, D_in]``."""
    if weight.ndim != 2 or x.shape[-1:] != weight.shape[1:]:
        raise ValueError(f"x {list(x.shape)} and weight {list(weight.shape)} do not match")
    y = np.matmul(x, weight.T.astype(x.dtype, copy=False))
    if bias is not None:
        y = y + bias.astype(x.dtype, copy=False)
    return y


def _swap_last(a):
    return a if a.ndim < 2 else np.swapaxes(a, -1, -2)


@register("matmul")
def matmul(x, y, transpose_x=False, transpose_y=False):
    """MIL ``matmul`` (iOS15+, iOS17): N-D batched matmul with numpy broadcasting rules."""
    if as_bool(transpose_x, "transpose_x"):
        x = _swap_last(x)
    if as_bool(transpose_y, "transpose_y"):
        y = _swap_last(y)
    dtype = np.result_type(x, y) if x.dtype.kind == y.dtype.kind else (x.dtype if x.dtype.kind == "f" else y.dtype)
    return np.matmul(x.astype(dtype, copy=False), y.astype(dtype, copy=False))


@register("einsum", tuple_params=("values",))
def einsum(values, equation):
    """MIL ``einsum`` (iOS15+): two operands, e.g. ``nchw,nwhu->nchu`` / ``chw,whr->chr``.

    Size-1 batch dimensions broadcast against the other operand."""
    if len(values) != 2:
        raise ValueError(f"einsum takes two operands, got {len(values)}")
    equation = as_str(equation, "equation").replace(" ", "")
    lhs, _, out = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != 2 or not out:
        raise ValueError(f"unsupported einsum equation {equation!r}")
    a, b = values
    if len(terms[0]) != a.ndim or len(terms[1]) != b.ndim:
        raise ValueError(f"equation {equation!r} does not match ranks {a.ndim}, {b.ndim}")
    sizes: dict[str, int] = {}
    for term, arr in ((terms[0], a), (terms[1], b)):
        for label, size in zip(term, arr.shape):
            if sizes.get(label, 1) == 1:
                sizes[label] = size
            elif size not in (1, sizes[label]):
                raise ValueError(f"dimension '{label}' has sizes {sizes[label]} and {size}")
    a = np.broadcast_to(a, [sizes[c] for c in terms[0]])
    b = np.broadcast_to(b, [sizes[c] for c in terms[1]])
    return np.einsum(f"{terms[0]},{terms[1]}->{out}", a, b)


# -- prepared kernels (see kiln.mil.registry) ---------------------------------------------------


@prepares("linear", narrow=("weight",))
def prepare_linear(spec):
    """Constant weight (and bias): ``x @ W.T + b`` with ``W.T`` and ``b`` fixed; a large fp16
    weight stays float16 and is widened per call."""
    weight, bias = spec.consts.get("weight"), spec.consts.get("bias")
    shape = spec.static_shape("x")
    if spec.dynamic != ("x",) or not isinstance(weight, np.ndarray) or shape is None:
        return None
    if weight.ndim != 2 or tuple(shape[-1:]) != weight.shape[1:]:
        return None  # the plain function reports the mismatch at run time
    wsource = float32_source(weight)
    b = None if bias is None else np.asarray(bias, np.float32)
    if b is None:
        def kernel(x):
            return np.matmul(x, wsource().T)
    else:
        def kernel(x):
            y = np.matmul(x, wsource().T)
            y += b
            return y

    kernel.fresh = True
    return kernel


@prepares("matmul", narrow=("x", "y"))
def prepare_matmul(spec):
    """Transpose flags fixed; a constant operand (possibly a large fp16 weight) prepared once."""
    try:
        tx = as_bool(spec.consts.get("transpose_x", False), "transpose_x")
        ty = as_bool(spec.consts.get("transpose_y", False), "transpose_y")
    except ValueError:
        return None
    types = [spec.input_types.get(name) for name in ("x", "y")]
    consts = [spec.consts.get(name) for name in ("x", "y")]
    dtypes_ = [t.dtype.storage if t is not None else np.asarray(c).dtype for t, c in zip(types, consts)]
    if any(d.kind != "f" for d in dtypes_):
        return None  # integer products keep the plain function's type rules
    if spec.dynamic == ("x", "y"):
        def kernel(x, y):
            return np.matmul(_swap_last(x) if tx else x, _swap_last(y) if ty else y)
    elif spec.dynamic == ("x",) and isinstance(consts[1], np.ndarray):
        ysource = float32_source(consts[1])

        def kernel(x):
            return np.matmul(_swap_last(x) if tx else x, _swap_last(ysource()) if ty else ysource())
    elif spec.dynamic == ("y",) and isinstance(consts[0], np.ndarray):
        xsource = float32_source(consts[0])

        def kernel(y):
            return np.matmul(_swap_last(xsource()) if tx else xsource(), _swap_last(y) if ty else y)
    else:
        return None
    kernel.fresh = True
    return kernel
