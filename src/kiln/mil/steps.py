"""Steps: the closures an execution plan runs, each reading its inputs from a flat list of value
slots and writing its outputs back. A :class:`Node` is one op compiled to a kernel (possibly with
single-use producers inlined, see :mod:`kiln.mil.fusion`); ``node_step`` turns it into a step; ops
with nested blocks, variadic inputs or a state write run as generic steps. Op failures become
:class:`OpExecutionError` naming the op."""

from __future__ import annotations

import functools
import inspect
from typing import Callable

from kiln.foundation.errors import KilnError

from . import dtypes
from .errors import OpExecutionError
from .output_checks import output_fixer
from .registry import OpContext


class BlockPlan:
    """A compiled block: its steps, the slots of its inputs and of its outputs."""

    __slots__ = ("steps", "input_slots", "output_slots")

    def __init__(self, steps: list, input_slots: list[int], output_slots: list[int]):
        self.steps = steps
        self.input_slots = input_slots
        self.output_slots = output_slots


class BoundBlock:
    """A nested block bound to one run's value slots; calling it runs the block.

    ``block(*inputs)`` stores the block inputs, runs its ops and returns its outputs (a list)."""

    __slots__ = ("plan", "env")

    def __init__(self, plan: BlockPlan, env: list):
        self.plan = plan
        self.env = env

    def __call__(self, *inputs):
        plan, env = self.plan, self.env
        if len(inputs) != len(plan.input_slots):
            raise ValueError(f"block takes {len(plan.input_slots)} inputs, got {len(inputs)}")
        for slot, value in zip(plan.input_slots, inputs):
            env[slot] = value
        for step in plan.steps:
            step(env)
        return [env[slot] for slot in plan.output_slots]


_CAUGHT = (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, OverflowError,
           MemoryError, AttributeError, RuntimeError, FloatingPointError)


def _failure(label, exc) -> OpExecutionError:
    op_type, opset, node = label
    return OpExecutionError(op_type, opset, node, f"{type(exc).__name__}: {exc}")


class Node:
    """One op compiled to a kernel over value slots, before it becomes a step. A node whose
    single output feeds exactly one later node is *inlined* into it (``inputs`` then holds the
    producer node instead of a slot): the fused step runs the same kernels and output fixes in
    the same order, without storing the intermediate, so results are bit-identical."""

    __slots__ = ("kernel", "inputs", "out_slots", "checks", "label", "check_once", "depth")

    def __init__(self, kernel, in_slots, out_slots, checks, label, check_once):
        self.kernel = kernel
        self.inputs: list = list(in_slots)  # slot (int) or an inlined producer Node
        self.out_slots = list(out_slots)
        self.checks = checks
        self.label = label  # (op type, opset, node name)
        self.check_once = check_once
        self.depth = 1  # nesting of inlined producers (bounded: each level is a Python frame)

    def op_types(self) -> list[str]:
        """The op types this node runs, producers first."""
        types = []
        for source in self.inputs:
            if isinstance(source, Node):
                types += source.op_types()
        return types + [self.label[0]]


def _fresh(node: "Node") -> bool:
    """Whether ``node``'s value is an array no one else holds (so a consumer may overwrite it):
    its kernel allocates its result, or fp16 rounding made a new array."""
    check = node.checks[0]
    return getattr(node.kernel, "fresh", False) or check.fast is dtypes.round_to_fp16


def _evaluator(node: Node) -> Callable:
    """``env -> value`` (a list for multi-output nodes) of ``node``, its inlined producers first."""
    label = node.label
    getters = []
    kernel = node.kernel
    for position, source in enumerate(node.inputs):
        if isinstance(source, Node):
            getters.append(_evaluator(source))
            if position == 0 and _fresh(source) and getattr(node.kernel, "inplace", None) is not None:
                kernel = node.kernel.inplace  # may overwrite its first input
        else:
            getters.append(source)
    slots_only = all(isinstance(g, int) for g in getters)
    if len(node.out_slots) == 1:
        fix = _single_fix(node)

        if slots_only and len(getters) == 1:
            (a,) = getters

            def evaluate(env):
                try:
                    return fix(kernel(env[a]))
                except KilnError:
                    raise
                except _CAUGHT as exc:
                    raise _failure(label, exc) from exc

            return evaluate
        if slots_only and len(getters) == 2:
            a, b = getters

            def evaluate(env):
                try:
                    return fix(kernel(env[a], env[b]))
                except KilnError:
                    raise
                except _CAUGHT as exc:
                    raise _failure(label, exc) from exc

            return evaluate
        if len(getters) == 1:
            (produce,) = getters

            def evaluate(env):
                value = produce(env)
                try:
                    return fix(kernel(value))
                except KilnError:
                    raise
                except _CAUGHT as exc:
                    raise _failure(label, exc) from exc

            return evaluate
        args = _argument_reader(getters)

        def evaluate(env):
            values = args(env)
            try:
                return fix(kernel(*values))
            except KilnError:
                raise
            except _CAUGHT as exc:
                raise _failure(label, exc) from exc

        return evaluate

    n_out = len(node.out_slots)
    fixes = [output_fixer(check, node.check_once) for check in node.checks]
    args = _argument_reader(getters)

    def evaluate(env):
        values = args(env)
        try:
            result = kernel(*values)
            if not isinstance(result, (tuple, list)) or len(result) != n_out:
                got = len(result) if isinstance(result, (tuple, list)) else 1
                raise ValueError(f"produced {got} values for {n_out} outputs")
            return [fix(value) for fix, value in zip(fixes, result)]
        except KilnError:
            raise
        except _CAUGHT as exc:
            raise _failure(label, exc) from exc

    return evaluate


def _single_fix(node: Node) -> Callable:
    return output_fixer(node.checks[0], node.check_once, owned=getattr(node.kernel, "fresh", False))


def _argument_reader(getters) -> Callable:
    """``env -> [argument values]`` for a mix of slots and producer evaluators."""
    if all(isinstance(g, int) for g in getters):
        return lambda env: [env[s] for s in getters]
    readers = [(g, None) if isinstance(g, int) else (None, g) for g in getters]
    return lambda env: [env[s] if f is None else f(env) for s, f in readers]


def node_reads(node: Node) -> set[int]:
    reads = set()
    for source in node.inputs:
        reads |= node_reads(source) if isinstance(source, Node) else {source}
    return reads


class Free:
    """Marks a node whose step drops the given slots after it ran (their last read)."""

    __slots__ = ("node", "slots")

    def __init__(self, node: Node, slots: list[int]):
        self.node, self.slots = node, slots


def node_step(node) -> Callable:
    """The step storing ``node``'s output(s) in their slots (then dropping dead values)."""
    if isinstance(node, Free):
        step = node_step(node.node)
        dead = node.slots

        def freeing(env):
            step(env)
            for slot in dead:
                env[slot] = None

        freeing.label = step.label
        freeing.out_slots, freeing.out_types, freeing.in_slots = step.out_slots, step.out_types, step.in_slots
        return freeing
    evaluate = _evaluator(node)
    if len(node.out_slots) == 1:
        (out,) = node.out_slots

        def step(env):
            env[out] = evaluate(env)

    else:
        pairs = list(enumerate(node.out_slots))

        def step(env):
            values = evaluate(env)
            for index, slot in pairs:
                env[slot] = values[index]

    types = node.op_types()
    step.label = ("+".join(types) if len(types) > 1 else types[0], node.label[2])
    step.out_slots, step.out_types = node.out_slots, [check.ttype for check in node.checks]
    step.in_slots = sorted(node_reads(node))
    return step


def make_step(kernel, in_slots, out_slots, checks, label, check_once=True):
    """A step calling a prepared ``kernel(*inputs)`` (see :class:`Node`)."""
    return node_step(Node(kernel, in_slots, out_slots, checks, label, check_once))


def plain_kernel(fn, const_kwargs: dict, params: tuple[str, ...]):
    """A kernel calling an op's plain function: positionally when its leading parameters are the
    dynamic inputs in order, else by keyword."""
    try:
        signature = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        signature = []
    leading = [p.name for p in signature[: len(params)]
               if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if tuple(leading) == params:
        return functools.partial(fn, **const_kwargs) if const_kwargs else fn
    consts = dict(const_kwargs)

    def kernel(*args):
        return fn(**consts, **dict(zip(params, args)))

    return kernel


def make_generic_step(impl, const_kwargs, dynamic, tuples, out_slots, checks, context, label,
                      check_once=True):
    """A step for an op without a prepare function (or one that declined)."""
    if context is None and not tuples:
        kernel = plain_kernel(impl.fn, const_kwargs, tuple(param for param, _ in dynamic))
        return make_step(kernel, [slot for _, slot in dynamic], out_slots, checks, label, check_once)
    fn = impl.fn
    n_out = len(out_slots)
    fixers = [check.full for check in checks]

    def step(env):
        kwargs = const_kwargs.copy()
        for param, in_slot in dynamic:
            kwargs[param] = env[in_slot]
        for param, items in tuples:
            kwargs[param] = [env[s] if s is not None else v for s, v in items]
        try:
            if context is not None:
                ctx = OpContext(
                    context.op_type, context.node, context.opset, context.precision,
                    blocks=[BoundBlock(b, env) for b in context.blocks], state=context.state,
                )
                result = fn(ctx=ctx, **kwargs)
            else:
                result = fn(**kwargs)
            if n_out == 1:
                env[out_slots[0]] = fixers[0](result)
                return
            if not isinstance(result, (tuple, list)) or len(result) != n_out:
                got = len(result) if isinstance(result, (tuple, list)) else 1
                raise ValueError(f"produced {got} values for {n_out} outputs")
            for s, f, r in zip(out_slots, fixers, result):
                env[s] = f(r)
        except KilnError:
            raise
        except _CAUGHT as exc:
            raise _failure(label, exc) from exc

    return step
