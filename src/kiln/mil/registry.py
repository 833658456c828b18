"""The op registry: one small function per MIL op, keyed by op type and the first opset it serves.

An implementation is a plain function whose keyword parameters are the op's MIL inputs (and, for
iOS16 ``constexpr_*`` ops, its attributes). Parameters left out by the program take the Python
default, which is the MIL default from coremltools' op definition. Tensors arrive as numpy arrays
(0-d for scalars), strings as ``str``, tuple inputs (declared with ``tuple_params``) as lists.
The function returns one array, or a tuple of arrays for multi-output ops; the execution plan
casts each result to the output's declared dtype (and rounds it in fp16 precision mode).

Ops that need more than their inputs (nested blocks, the precision mode, a random generator)
declare ``context=True`` and receive an :class:`OpContext` as ``ctx``.

Where an op's semantics changed between opsets, a newer variant is registered with a later
``since``; lookup picks the newest variant not newer than the program's opset.

Two-phase ops. Every shape in these programs is static, so most of an op's work (parsing its
constant attributes, geometry, index tuples, output dtypes) can be done once, when the plan is
built. An op may attach a *prepare* function with :func:`prepares`: ``prepare(spec)`` receives an
:class:`OpSpec` (the constant inputs, the names and declared types of the dynamic ones, the output
types, the precision) and returns a *kernel* that takes the dynamic inputs positionally, in
``spec.dynamic`` order, and does only arithmetic. ``prepare`` returns None when it cannot
specialise (e.g. a shape it needs is not static, or the constants are invalid): the plan then
calls the plain function, which also reports the error at run time as before. The plain function
stays the op's reference semantics; a prepared kernel must give bit-identical results.

``exact=True`` marks value-preserving ops (their outputs are elements of their inputs: reshapes,
slices, ``relu``...): in fp16 mode, when every float input is already an fp16 value, the plan
skips re-rounding their outputs (rounding is idempotent, so results are unchanged).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Callable

OPSETS = ("iOS15", "iOS16", "iOS17", "iOS18")
_OPSET_NUMBER = {name: int(name[3:]) for name in OPSETS}


def opset_number(opset: str) -> int:
    """15 for "iOS15" or "CoreML5" (the milproto spelling), 16 for "iOS16"/"CoreML6", ..."""
    m = re.fullmatch(r"(?:iOS(\d+)|CoreML(\d+))", opset)
    if not m:
        raise ValueError(f"unknown opset name {opset!r}")
    return int(m.group(1)) if m.group(1) else int(m.group(2)) + 10


def opset_name(opset: str) -> str:
    """Canonical ``iOSNN`` name for an opset spelled either way."""
    return f"iOS{opset_number(opset)}"


@dataclass(frozen=True)
class OpImpl:
    op_type: str
    since: int
    fn: Callable
    kind: str  # module (group) it lives in, e.g. "elementwise_binary"
    tuple_params: frozenset = field(default_factory=frozenset)
    context: bool = False
    constexpr: bool = False  # evaluated once at plan-build time (const and constexpr_* ops)
    exact: bool = False  # outputs are elements of the inputs (no rounding needed in fp16 mode)
    prepare: Callable | None = None  # OpSpec -> kernel(*dynamic inputs), or None (see module doc)
    narrow_params: frozenset = field(default_factory=frozenset)  # may receive fp16 constants as float16


@dataclass
class OpSpec:
    """What a prepare function knows about one op of a plan (see the module docstring)."""

    op_type: str
    opset: str
    precision: str
    consts: dict  # constant inputs and attributes by parameter name
    dynamic: tuple[str, ...]  # parameter names of the kernel's positional arguments
    input_types: dict  # parameter name -> TensorType (None when unknown / not a tensor)
    output_types: list  # TensorType per output (None for non-tensors)
    scratch: object = None  # the plan's ops._util.WideningScratch, for large fp16 weights widened per call

    def const(self, name: str, default=None):
        return self.consts.get(name, default)

    def static_shape(self, name: str) -> tuple[int, ...] | None:
        ttype = self.input_types.get(name)
        return None if ttype is None else ttype.static_shape

    def output_shape(self, index: int = 0) -> tuple[int, ...] | None:
        ttype = self.output_types[index] if index < len(self.output_types) else None
        return None if ttype is None else ttype.static_shape


@dataclass
class OpContext:
    """Extra information handed to ops registered with ``context=True``."""

    op_type: str
    node: str
    opset: str
    precision: str
    blocks: list = field(default_factory=list)  # compiled nested blocks (control flow)
    rng: object = None  # numpy Generator for random ops
    state: dict = field(default_factory=dict)  # per-op scratch kept across runs


_REGISTRY: dict[str, list[OpImpl]] = {}


def register(
    op_type: str,
    *,
    since: str = "iOS15",
    tuple_params: tuple[str, ...] = (),
    context: bool = False,
    constexpr: bool = False,
    exact: bool = False,
    narrow: tuple[str, ...] = (),
):
    """Register the decorated function as the implementation of ``op_type`` from opset ``since``.
    ``narrow``: parameters whose fp16 constants it takes as float16 arrays (see :func:`prepares`)."""

    def decorate(fn: Callable) -> Callable:
        module = fn.__module__.rsplit(".", 1)[-1]
        impl = OpImpl(
            op_type,
            opset_number(since),
            fn,
            module,
            frozenset(tuple_params),
            context,
            constexpr,
            exact,
            narrow_params=frozenset(narrow),
        )
        variants = _REGISTRY.setdefault(op_type, [])
        if any(v.since == impl.since for v in variants):
            raise ValueError(f"op {op_type} registered twice for {since}")
        variants.append(impl)
        variants.sort(key=lambda v: v.since)
        return fn

    return decorate


def prepares(op_type: str, *, since: str = "iOS15", narrow: tuple[str, ...] = ()):
    """Attach the decorated ``prepare(spec) -> kernel | None`` to the implementation of ``op_type``
    registered for opset ``since`` (register the plain function first). ``narrow`` names the
    parameters whose fp16 constants the kernel accepts as float16 arrays (widened per call), so
    large weights stay fp16 in memory."""

    def decorate(prepare: Callable) -> Callable:
        variants = _REGISTRY.get(op_type, [])
        number = opset_number(since)
        for index, impl in enumerate(variants):
            if impl.since == number:
                if impl.prepare is not None:
                    raise ValueError(f"op {op_type} ({since}) already has a prepare function")
                variants[index] = replace(impl, prepare=prepare, narrow_params=impl.narrow_params | frozenset(narrow))
                return prepare
        raise ValueError(f"op {op_type} has no implementation registered for {since}")

    return decorate


def lookup(op_type: str, opset: str) -> OpImpl | None:
    """The implementation of ``op_type`` for ``opset`` ("iOS17" or "CoreML7"), or None."""
    _ensure_loaded()
    variants = _REGISTRY.get(op_type)
    if not variants:
        return None
    number = opset_number(opset)
    chosen = None
    for impl in variants:
        if impl.since <= number:
            chosen = impl
    return chosen


def implemented_op_types(opset: str) -> set[str]:
    """All op types with an implementation usable in ``opset``."""
    _ensure_loaded()
    return {t for t in _REGISTRY if lookup(t, opset) is not None}


def all_impls() -> dict[str, list[OpImpl]]:
    _ensure_loaded()
    return {t: list(v) for t, v in _REGISTRY.items()}


_loaded = False


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from . import ops  # noqa: F401  (registers every op module)
