"""Linear algebra ops (coremltools defs iOS15/linear.py; iOS17 relaxes dtypes only)."""

from __future__ import annotations

import numpy as np

from ..registry import prepares, register
from ._util import (TORCH_PRODUCT_MIN, as_bool, as_str, float32_source, product_size, to_torch, torch,
                    torch_float32_source)


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
    """Constant weight (and bias): ``x @ W.T + b``; a large fp16 weight stays float16 and is
    widened per call; large products run on torch."""
    weight, bias = spec.consts.get("weight"), spec.consts.get("bias")
    shape = spec.static_shape("x")
    if spec.dynamic != ("x",) or not isinstance(weight, np.ndarray) or shape is None or len(shape) < 1:
        return None
    if weight.ndim != 2 or tuple(shape[-1:]) != weight.shape[1:]:
        return None  # the plain function reports the mismatch at run time
    b = None if bias is None else np.asarray(bias, np.float32)
    rows = int(np.prod(shape[:-1], dtype=np.int64))
    if product_size((rows, weight.shape[1]), weight.shape[::-1]) >= TORCH_PRODUCT_MIN:
        t = torch()
        wsource = torch_float32_source(weight, spec.scratch)
        bt = None if b is None else t.from_numpy(np.array(np.broadcast_to(b, weight.shape[:1]), np.float32))

        def kernel(x):
            return t.nn.functional.linear(to_torch(x), wsource(), bt).numpy()
    else:
        wsource = float32_source(weight, spec.scratch)
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
    """Transpose flags fixed; a constant operand (possibly a large fp16 weight) prepared once;
    large products run on torch."""
    try:
        tx = as_bool(spec.consts.get("transpose_x", False), "transpose_x")
        ty = as_bool(spec.consts.get("transpose_y", False), "transpose_y")
    except ValueError:
        return None
    operands = {}
    for name, flag in (("x", tx), ("y", ty)):
        if name in spec.dynamic:
            ttype, shape = spec.input_types.get(name), spec.static_shape(name)
            if ttype is None or shape is None or ttype.dtype.storage != np.float32:
                return None
        else:
            value = spec.consts.get(name)
            if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
                return None
            shape = value.shape
        if len(shape) < 2:
            return None  # vector products keep the plain function
        operands[name] = (shape[:-2] + (shape[-1], shape[-2])) if flag else shape
    try:
        size = product_size(operands["x"], operands["y"])
    except ValueError:
        return None
    if operands["x"][-1] != operands["y"][-2]:
        return None
    if size >= TORCH_PRODUCT_MIN:
        t = torch()
        tr = lambda a, flag: a.transpose(-1, -2) if flag else a  # noqa: E731
        if spec.dynamic == ("x", "y"):
            def kernel(x, y):
                return t.matmul(tr(to_torch(x), tx), tr(to_torch(y), ty)).numpy()
        elif spec.dynamic == ("x",):
            ysource = torch_float32_source(spec.consts["y"], spec.scratch)

            def kernel(x):
                return t.matmul(tr(to_torch(x), tx), tr(ysource(), ty)).numpy()
        elif spec.dynamic == ("y",):
            xsource = torch_float32_source(spec.consts["x"], spec.scratch)

            def kernel(y):
                return t.matmul(tr(xsource(), tx), tr(to_torch(y), ty)).numpy()
        else:
            return None
    elif spec.dynamic == ("x", "y"):
        def kernel(x, y):
            return np.matmul(_swap_last(x) if tx else x, _swap_last(y) if ty else y)
    elif spec.dynamic == ("x",):
        ysource = float32_source(spec.consts["y"], spec.scratch)

        def kernel(x):
            return np.matmul(_swap_last(x) if tx else x, _swap_last(ysource()) if ty else ysource())
    elif spec.dynamic == ("y",):
        xsource = float32_source(spec.consts["x"], spec.scratch)

        def kernel(y):
            return np.matmul(_swap_last(xsource()) if tx else xsource(), _swap_last(y) if ty else y)
    else:
        return None
    kernel.fresh = True
    return kernel
