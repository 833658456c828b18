"""Execution plans: a MIL function compiled once, run many times.

Building a plan resolves every op to its registered implementation (failing with
:class:`UnsupportedOpError` before anything runs), materialises ``const`` and every
``constexpr_*`` value, and turns each remaining op into a pre-bound step closure that reads its
dynamic inputs from a flat list of value slots and writes its outputs back. ``run`` copies a
template of that list (constants pre-filled), stores the inputs, and calls the steps in order.
"""

from __future__ import annotations

import functools
import inspect
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from kiln.errors import KilnError

from . import dtypes
from .errors import InputContractError, ModelFormatError, OpExecutionError, UnsupportedOpError
from .ops._util import WideningScratch
from .registry import OpContext, OpImpl, OpSpec, lookup, opset_name
from .values import BlobStore, TensorType, decode_value, tensor_type_from_proto


@dataclass(frozen=True)
class IOSpec:
    """One input or output of a plan: its name and MIL tensor type (None for a non-tensor output,
    e.g. a classifier's probability dictionary)."""

    name: str
    type: TensorType | None

    @property
    def dtype(self) -> str:
        return self.type.dtype.name

    @property
    def shape(self) -> tuple[int | None, ...] | None:
        return self.type.shape

    @property
    def numpy_dtype(self) -> np.dtype:
        return self.type.dtype.user

    def describe(self) -> str:
        return f"{self.name}: {self.type.describe() if self.type is not None else 'non-tensor'}"


class Prediction(dict):
    """Outputs of one :meth:`ExecutionPlan.run`, by name, plus the precision mode that made them
    and, for stateful programs (iOS18 states), the final value of every state."""

    def __init__(self, values: Mapping[str, np.ndarray], precision: str):
        super().__init__(values)
        self.precision = precision
        self.states: dict[str, np.ndarray] = {}


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


def _make_output_fixer(ttype: TensorType | None, precision: str, *, round_fp16: bool = True) -> Callable:
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


class _OutputCheck:
    """An output's full fixer plus what every later run needs once the first run showed the op
    already produces the declared dtype and shape (only fp16/bf16 rounding, or nothing)."""

    __slots__ = ("full", "fast", "ttype")

    def __init__(self, ttype: TensorType | None, precision: str, round_fp16: bool):
        self.ttype = ttype
        self.full = _make_output_fixer(ttype, precision, round_fp16=round_fp16)
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


class _Scope:
    """Name -> slot mapping of one block, chained to its enclosing block's scope."""

    def __init__(self, parent: "_Scope | None" = None):
        self.parent = parent
        self.names: dict[str, int] = {}

    def lookup(self, name: str) -> int | None:
        scope = self
        while scope is not None:
            slot = scope.names.get(name)
            if slot is not None:
                return slot
            scope = scope.parent
        return None


_NO_CONST = object()


@functools.lru_cache(maxsize=None)
def _parameter_positions(fn: Callable) -> dict[str, int]:
    return {name: index for index, name in enumerate(inspect.signature(fn).parameters)}


def _in_signature_order(inputs, fn: Callable) -> list:
    """An op's ``(parameter, argument)`` pairs in the order ``fn`` declares its parameters.

    A protobuf map iterates in an order that changes from process to process, and the dynamic
    inputs' order is the kernel's argument order a prepare function matches on (``("x", "y")``):
    without this, a process-dependent share of ops missed their prepared kernel."""
    positions = _parameter_positions(fn)
    return sorted(inputs.items(), key=lambda item: (positions.get(item[0], len(positions)), item[0]))


class _Compiler:
    def __init__(self, opset: str, precision: str, blobs: BlobStore | None, *, function_name: str = "main",
                 pool: "ConstantPool | None" = None, check_once: bool = True, fuse: bool = True):
        self.opset = opset
        self.precision = precision
        self.blobs = blobs
        self.function_name = function_name
        self.pool = pool
        self.check_once = check_once  # output checks on the first run only (static shapes)
        self.widened: dict[int, np.ndarray] = {}
        self.scratch = WideningScratch()  # shared by the plan's kernels (nested blocks included)
        self.prepared_count = 0
        self.fuse = fuse  # inline single-use producers into their consumer (see _Node)
        self.uses: dict[str, int] = {}  # value name -> times it is read (inputs, block outputs)
        self.pinned: set[int] = set()  # slots read by steps liveness does not see into
        self.template: list = []
        self.is_const: list[bool] = []
        self.types: list[TensorType | None] = []

    # -- slots -----------------------------------------------------------------------------
    def new_slot(self, scope: _Scope, name: str, ttype: TensorType | None, const=_NO_CONST) -> int:
        slot = len(self.template)
        self.template.append(None if const is _NO_CONST else const)
        self.is_const.append(const is not _NO_CONST)
        self.types.append(ttype)
        scope.names[name] = slot
        return slot

    def resolve(self, scope: _Scope, name: str, where: str) -> int:
        slot = scope.lookup(name)
        if slot is None:
            raise ModelFormatError(f"{where}: refers to '{name}', which is not defined before it")
        return slot

    # -- checks ----------------------------------------------------------------------------
    def check_supported(self, block) -> None:
        """Raise UnsupportedOpError for the first op (in program order) kiln cannot run."""
        for op in block.operations:
            if lookup(op.type, self.opset) is None:
                raise UnsupportedOpError(op.type, opset_name(self.opset), _node_name(op))
            for nested in op.blocks:
                self.check_supported(nested)

    # -- blocks ----------------------------------------------------------------------------
    def compile_block(self, block, scope: _Scope, input_names: list[tuple[str, TensorType | None]]):
        input_slots = [self.new_slot(scope, name, ttype) for name, ttype in input_names]
        items: list = []  # steps and _Nodes in program order
        inlinable: dict[int, _Node] = {}  # slot -> pending single-output node used exactly once
        inlined: set[int] = set()  # id() of nodes now part of a consumer
        for op in block.operations:
            compiled = self.compile_op(op, scope)
            if compiled is None:
                continue
            if not isinstance(compiled, _Node):
                compiled.label = (op.type, _node_name(op))
                compiled.out_slots = [scope.lookup(o.name) for o in op.outputs]
                compiled.out_types = [self.types[s] if s is not None else None for s in compiled.out_slots]
                compiled.in_slots = sorted(_read_slots(op, scope))
                items.append(compiled)
                self.pinned.update(compiled.in_slots)  # what it reads is opaque to liveness
                continue
            if self.fuse:
                for position, source in enumerate(compiled.inputs):
                    producer = inlinable.get(source) if isinstance(source, int) else None
                    if producer is not None and producer.depth < MAX_FUSED_DEPTH:
                        del inlinable[source]
                        compiled.inputs[position] = producer
                        compiled.depth = max(compiled.depth, producer.depth + 1)
                        inlined.add(id(producer))
                if len(compiled.out_slots) == 1 and self.uses.get(op.outputs[0].name, 0) == 1:
                    inlinable[compiled.out_slots[0]] = compiled
            items.append(compiled)
        items = [item for item in items if id(item) not in inlined]
        output_slots = [self.resolve(scope, name, "block output") for name in block.outputs]
        if scope.parent is None:  # the function body: drop each value after its last read
            items = _free_dead_values(items, self.pinned | set(output_slots) | set(input_slots),
                                      self.is_const)
        steps = [_node_step(item) if isinstance(item, (_Node, _Free)) else item for item in items]
        for slot in output_slots:  # a block returning a pooled fp16 constant returns it widened
            if self.is_const[slot]:
                self.template[slot] = self.const_value(slot, narrow=False)
        return BlockPlan(steps, input_slots, output_slots)

    # -- ops -------------------------------------------------------------------------------
    def const_value(self, slot: int, narrow: bool):
        """A constant slot's value for an op input: the pool's compact float16 form when the op
        accepts it (``narrow``), else the storage dtype (widened once per plan)."""
        value = self.template[slot]
        if narrow or type(value) is not np.ndarray or value.dtype != np.float16:
            return value
        wide = self.widened.get(slot)
        if wide is None:
            wide = self.widened[slot] = value.astype(np.float32)
        return wide

    def compile_op(self, op, scope: _Scope):
        node = _node_name(op)
        impl: OpImpl | None = lookup(op.type, self.opset)
        if impl is None:  # check_supported ran first; keep the guarantee local too
            raise UnsupportedOpError(op.type, opset_name(self.opset), node)
        where = f"op '{op.type}' producing '{node}'"
        label = (op.type, opset_name(self.opset), node)
        output_types = [tensor_type_from_proto(o.type, f"{where}, output '{o.name}'") for o in op.outputs]
        if impl.constexpr:
            pooled = self.pool.get(self.function_name, node) if self.pool is not None else None
            if pooled is not None:
                for out, ttype, value in zip(op.outputs, output_types, pooled):
                    self.new_slot(scope, out.name, ttype, const=value)
                return None
        narrow = impl.narrow_params if impl.prepare is not None else frozenset()
        const_kwargs: dict = {}
        for key, value in op.attributes.items():
            if key == "name":
                continue
            const_kwargs[key] = decode_value(value, self.blobs, f"{where}, attribute '{key}'",
                                             keep_fp16=impl.constexpr)
        dynamic: list[tuple[str, int]] = []
        tuples: list[tuple[str, list]] = []
        for param, argument in _in_signature_order(op.inputs, impl.fn):
            items = []  # (slot or None, constant value)
            for binding in argument.arguments:
                kind = binding.WhichOneof("binding")
                if kind == "name":
                    slot = self.resolve(scope, binding.name, where)
                    if self.is_const[slot]:
                        items.append((None, self.const_value(slot, param in narrow)))
                    else:
                        items.append((slot, None))
                elif kind == "value":
                    items.append((None, decode_value(binding.value, self.blobs, f"{where}, input '{param}'")))
                else:
                    raise ModelFormatError(f"{where}: input '{param}' has an empty binding")
            if param in impl.tuple_params:
                if all(slot is None for slot, _ in items):
                    const_kwargs[param] = [value for _, value in items]
                else:
                    tuples.append((param, items))
            else:
                if len(items) != 1:
                    raise ModelFormatError(f"{where}: input '{param}' binds {len(items)} values, expected 1")
                slot, value = items[0]
                if slot is None:
                    const_kwargs[param] = value
                else:
                    dynamic.append((param, slot))

        if impl.constexpr:
            if dynamic or tuples:
                raise ModelFormatError(f"{where}: a constant op with non-constant inputs")
            const_kwargs = {k: v if k in impl.narrow_params else _widen(v) for k, v in const_kwargs.items()}
            try:
                result = impl.fn(**const_kwargs)
                results = list(result) if isinstance(result, tuple) else [result]
                if len(results) != len(op.outputs):
                    raise ValueError(f"produced {len(results)} values for {len(op.outputs)} outputs")
                fixed = [_pooled(r, t) for t, r in zip(output_types, results)]
            except KilnError:
                raise
            except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, OverflowError,
                    MemoryError, AttributeError) as exc:
                raise OpExecutionError(*label, f"{type(exc).__name__}: {exc}") from None
            if self.pool is not None:
                self.pool.put(self.function_name, node, fixed)
            for out, ttype, value in zip(op.outputs, output_types, fixed):
                self.new_slot(scope, out.name, ttype, const=value)
            return None

        context = None
        if impl.context:
            nested = []
            for block in op.blocks:
                inner = _Scope(scope)
                block_inputs = [
                    (i.name, tensor_type_from_proto(i.type, f"{where}, block input '{i.name}'"))
                    for i in block.inputs
                ]
                nested.append(self.compile_block(block, inner, block_inputs))
            context = OpContext(op.type, node, opset_name(self.opset), self.precision, blocks=nested)
        elif len(op.blocks):
            raise ModelFormatError(f"{where}: op type '{op.type}' cannot have nested blocks")

        if op.type == "write_state":
            # The new value goes into the state's own slot (write_state has no outputs).
            target = [slot for param, slot in dynamic if param == "input"]
            if not target or op.outputs:
                raise ModelFormatError(f"{where}: write_state needs a state input and no outputs")
            out_slots = target
            output_types = [self.types[target[0]]]
        else:
            out_slots = [self.new_slot(scope, o.name, t) for o, t in zip(op.outputs, output_types)]
        exact = impl.exact and self._inputs_hold_fp16(dynamic, tuples, const_kwargs)
        checks = [_OutputCheck(t, self.precision, round_fp16=not exact) for t in output_types]
        kernel = None
        if impl.prepare is not None and context is None and not tuples:
            spec = OpSpec(op.type, opset_name(self.opset), self.precision, const_kwargs,
                          tuple(param for param, _ in dynamic),
                          {param: self.types[slot] for param, slot in dynamic}, output_types,
                          scratch=self.scratch)
            kernel = impl.prepare(spec)
        if kernel is not None:
            self.prepared_count += 1
            return _Node(kernel, [slot for _, slot in dynamic], out_slots, checks, label, self.check_once)
        if narrow:  # the plain function takes storage dtypes
            const_kwargs = {k: _widen(v) if k in narrow else v for k, v in const_kwargs.items()}
        if context is None and not tuples and op.type != "write_state":
            kernel = _plain_kernel(impl.fn, const_kwargs, tuple(param for param, _ in dynamic))
            return _Node(kernel, [slot for _, slot in dynamic], out_slots, checks, label, self.check_once)
        return _make_generic_step(impl, const_kwargs, dynamic, tuples, out_slots, checks, context, label,
                                  self.check_once)

    def _inputs_hold_fp16(self, dynamic, tuples, const_kwargs) -> bool:
        """Whether every float input of an op holds fp16 values in fp16 mode (so a
        value-preserving op's outputs need no rounding)."""
        if self.precision != dtypes.FP16:
            return False
        slots = [slot for _, slot in dynamic]
        consts = list(const_kwargs.values())
        for _, items in tuples:
            slots += [slot for slot, _ in items if slot is not None]
            consts += [value for slot, value in items if slot is None]
        for slot in slots:
            ttype = self.types[slot]
            if ttype is None or (ttype.dtype.is_float and ttype.dtype.name != "fp16"):
                return False
        for value in consts:
            if isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.dtype != np.float16:
                if not np.array_equal(value.astype(np.float16).astype(value.dtype), value, equal_nan=True):
                    return False
        return True


# Longest chain of producers inlined into one step (each level adds a Python frame per run).
MAX_FUSED_DEPTH = 24

# fp16 constants from this many elements up are kept as float16 in the constant pool.
COMPACT_MIN_ELEMENTS = 4096


def _compact(value, ttype: TensorType | None):
    """The pool form of a constant: fp16 tensors of some size as float16 (exact: they hold fp16
    values), everything else unchanged."""
    if (ttype is not None and ttype.dtype.name == "fp16" and isinstance(value, np.ndarray)
            and value.dtype == np.float32 and value.size >= COMPACT_MIN_ELEMENTS):
        return value.astype(np.float16)
    return value


def _pooled(value, ttype: TensorType | None):
    """A const/constexpr result as the pool keeps it: fixed to its declared type (fp16 rounded
    once, in every precision mode) and compacted; an fp16 blob read as float16 with the declared
    shape is taken as it is (no float32 round trip of large weights)."""
    if isinstance(value, str):
        return value
    if (ttype is not None and ttype.dtype.name == "fp16" and type(value) is np.ndarray
            and value.dtype == np.float16 and value.shape == ttype.static_shape):
        return value if value.size >= COMPACT_MIN_ELEMENTS else value.astype(np.float32)
    return _compact(_make_output_fixer(ttype, dtypes.FP16)(value), ttype)


def _widen(value):
    if isinstance(value, np.ndarray) and value.dtype == np.float16:
        return value.astype(np.float32)
    if isinstance(value, list):
        return [_widen(v) for v in value]
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


def _node_name(op) -> str:
    if len(op.outputs):
        return op.outputs[0].name
    name = op.attributes.get("name")
    if name is not None and name.immediateValue.tensor.strings.values:
        return name.immediateValue.tensor.strings.values[0]
    return "<unnamed>"


_CAUGHT = (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, OverflowError,
           MemoryError, AttributeError, RuntimeError, FloatingPointError)


def _failure(label, exc) -> OpExecutionError:
    op_type, opset, node = label
    return OpExecutionError(op_type, opset, node, f"{type(exc).__name__}: {exc}")


class _Node:
    """One op compiled to a kernel over value slots, before it becomes a step. A node whose
    single output feeds exactly one later node is *inlined* into it (``inputs`` then holds the
    producer node instead of a slot): the fused step runs the same kernels and output fixes in
    the same order, without storing the intermediate, so results are bit-identical."""

    __slots__ = ("kernel", "inputs", "out_slots", "checks", "label", "check_once", "depth")

    def __init__(self, kernel, in_slots, out_slots, checks, label, check_once):
        self.kernel = kernel
        self.inputs: list = list(in_slots)  # slot (int) or an inlined producer _Node
        self.out_slots = list(out_slots)
        self.checks = checks
        self.label = label  # (op type, opset, node name)
        self.check_once = check_once
        self.depth = 1  # nesting of inlined producers (bounded: each level is a Python frame)

    def op_types(self) -> list[str]:
        """The op types this node runs, producers first."""
        types = []
        for source in self.inputs:
            if isinstance(source, _Node):
                types += source.op_types()
        return types + [self.label[0]]


def _fresh(node: "_Node") -> bool:
    """Whether ``node``'s value is an array no one else holds (so a consumer may overwrite it):
    its kernel allocates its result, or fp16 rounding made a new array."""
    check = node.checks[0]
    return getattr(node.kernel, "fresh", False) or check.fast is _round_fp16


def _fixer(check: _OutputCheck, check_once: bool, owned: bool = False) -> Callable:
    """The output fix of one output: the full check on the first run; when that run showed the
    op already produces the declared dtype and shape (and ``check_once``), only rounding later,
    in place when the kernel's result is ``owned`` (a new array each call: no copy, no peak)."""
    fix = None

    def first(value):
        nonlocal fix
        conforms = check.conforms(value)
        value = check.full(value)
        if conforms and check_once:
            fix = _round_fp16_in_place if owned and check.fast is _round_fp16 else check.fast
        return value

    fix = first
    return lambda value: fix(value)


def _evaluator(node: _Node) -> Callable:
    """``env -> value`` (a list for multi-output nodes) of ``node``, its inlined producers first."""
    label = node.label
    getters = []
    kernel = node.kernel
    for position, source in enumerate(node.inputs):
        if isinstance(source, _Node):
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
    fixes = [_fixer(check, node.check_once) for check in node.checks]
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


def _single_fix(node: _Node) -> Callable:
    return _fixer(node.checks[0], node.check_once, owned=getattr(node.kernel, "fresh", False))


def _argument_reader(getters) -> Callable:
    """``env -> [argument values]`` for a mix of slots and producer evaluators."""
    if all(isinstance(g, int) for g in getters):
        return lambda env: [env[s] for s in getters]
    readers = [(g, None) if isinstance(g, int) else (None, g) for g in getters]
    return lambda env: [env[s] if f is None else f(env) for s, f in readers]


def _node_reads(node: _Node) -> set[int]:
    reads = set()
    for source in node.inputs:
        reads |= _node_reads(source) if isinstance(source, _Node) else {source}
    return reads


def _read_slots(op, scope: "_Scope") -> set[int]:
    """Slots of the enclosing scopes that ``op`` (nested blocks included) reads by name."""
    slots = set()

    def walk(operation):
        for argument in operation.inputs.values():
            for binding in argument.arguments:
                if binding.WhichOneof("binding") == "name":
                    slot = scope.lookup(binding.name)
                    if slot is not None:
                        slots.add(slot)
        for block in operation.blocks:
            for name in block.outputs:
                slot = scope.lookup(name)
                if slot is not None:
                    slots.add(slot)
            for inner in block.operations:
                walk(inner)

    walk(op)
    return slots


class _Free:
    """Marks a node whose step drops the given slots after it ran (their last read)."""

    __slots__ = ("node", "slots")

    def __init__(self, node: _Node, slots: list[int]):
        self.node, self.slots = node, slots


def _free_dead_values(items: list, keep: set[int], is_const: list[bool]) -> list:
    """Attach to each node the values it reads last, so a run does not hold every intermediate
    of a large network until its end (only values no opaque step reads; never outputs or inputs)."""
    last: dict[int, int] = {}
    for index, item in enumerate(items):
        if isinstance(item, _Node):
            for slot in _node_reads(item):
                last[slot] = index
    frees: dict[int, list[int]] = {}
    for slot, index in last.items():
        if slot not in keep and not is_const[slot]:
            frees.setdefault(index, []).append(slot)
    return [_Free(item, sorted(frees[index])) if index in frees else item for index, item in enumerate(items)]


def _node_step(node) -> Callable:
    """The step storing ``node``'s output(s) in their slots (then dropping dead values)."""
    if isinstance(node, _Free):
        step = _node_step(node.node)
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
    step.in_slots = sorted(_node_reads(node))
    return step


def _make_step(kernel, in_slots, out_slots, checks, label, check_once=True):
    """A step calling a prepared ``kernel(*inputs)`` (see :class:`_Node`)."""
    return _node_step(_Node(kernel, in_slots, out_slots, checks, label, check_once))


def _plain_kernel(fn, const_kwargs: dict, params: tuple[str, ...]):
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


def _make_generic_step(impl, const_kwargs, dynamic, tuples, out_slots, checks, context, label,
                       check_once=True):
    """A step for an op without a prepare function (or one that declined)."""
    if context is None and not tuples:
        kernel = _plain_kernel(impl.fn, const_kwargs, tuple(param for param, _ in dynamic))
        return _make_step(kernel, [slot for _, slot in dynamic], out_slots, checks, label, check_once)
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


class ExecutionPlan:
    """A compiled MIL function. Build with :func:`build_plan` or ``LoadedModel.plan()``."""

    def __init__(self, *, function_name, opset, precision, inputs, outputs, input_slots,
                 output_slots, steps, template, op_count, state_slots=(), prepared_count=0,
                 check_once=True):
        self.function_name: str = function_name
        self.opset: str = opset
        self.precision: str = precision
        self.inputs: list[IOSpec] = inputs
        self.outputs: list[IOSpec] = outputs
        self._input_slots = input_slots
        self._output_slots = output_slots
        self._steps = steps
        self._template = template
        self.op_count: int = op_count
        self.step_count: int = len(steps)
        self.prepared_count: int = prepared_count  # ops running a prepared kernel
        self.check_once: bool = check_once  # output dtype/shape checks on the first run only
        self._converters = [
            (spec.name, slot, spec.type.dtype.user, spec.type.dtype.storage, spec.type.shape)
            for spec, slot in zip(inputs, input_slots)
        ]
        self._output_converters = [
            (spec.name, slot, spec.type.dtype.user if spec.type is not None else None)
            for spec, slot in zip(outputs, output_slots)
        ]
        self._state_slots = list(state_slots)
        self.state_names = [name for name, _ in self._state_slots]
        self._state_dtypes = {spec.name: spec.type.dtype.user for spec in inputs}

    def contract(self) -> str:
        """Human-readable list of the expected inputs."""
        return ", ".join(spec.describe() for spec in self.inputs)

    def _contract_error(self, message: str) -> InputContractError:
        return InputContractError(f"{message}; expected inputs: {self.contract()}")

    def _bind(self, inputs: Mapping[str, np.ndarray]) -> list:
        """A fresh value environment holding ``inputs`` (checked against the contract)."""
        if not isinstance(inputs, Mapping):
            raise self._contract_error(f"inputs must be a mapping of name to array, got {type(inputs).__name__}")
        if len(inputs) != len(self._converters) or any(n not in inputs for n, *_ in self._converters):
            expected = {c[0] for c in self._converters}
            missing = sorted(expected - set(inputs))
            unexpected = sorted(set(map(str, inputs)) - expected)
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if unexpected:
                parts.append(f"unexpected {unexpected}")
            raise self._contract_error("wrong input names: " + ", ".join(parts))
        env = self._template.copy()
        for name, slot, user_dtype, storage, shape in self._converters:
            value = inputs[name]
            if type(value) is not np.ndarray:
                if isinstance(value, (np.generic, int, float, bool)):
                    value = np.asarray(value)
                else:
                    raise self._contract_error(
                        f"input '{name}' must be a numpy array, got {type(value).__name__}"
                    )
            if value.dtype != user_dtype:
                raise self._contract_error(
                    f"input '{name}' has dtype {value.dtype}, expected {user_dtype}"
                )
            if shape is not None and (
                value.ndim != len(shape)
                or any(d is not None and d != v for d, v in zip(shape, value.shape))
            ):
                raise self._contract_error(f"input '{name}' has shape {list(value.shape)}")
            env[slot] = value.astype(storage) if value.dtype != storage else value
        return env

    def run(self, inputs: Mapping[str, np.ndarray]) -> Prediction:
        """Run the function on ``inputs`` (name -> array of the declared dtype and shape)."""
        env = self._bind(inputs)
        with np.errstate(over="ignore"):  # e^x overflowing to inf is what e.g. sigmoid relies on
            for step in self._steps:
                step(env)
        outputs = {}
        for name, slot, user_dtype in self._output_converters:
            value = env[slot]
            if isinstance(value, np.ndarray) and user_dtype is not None:
                value = value.astype(user_dtype, order="C")  # a fresh C-ordered array the caller owns
            outputs[name] = value
        prediction = Prediction(outputs, self.precision)
        for name, slot in self._state_slots:
            prediction.states[name] = env[slot].astype(self._state_dtypes[name], order="C")
        return prediction

    __call__ = run

    def step_outputs(self, inputs: Mapping[str, np.ndarray]):
        """Run on ``inputs`` one top-level step at a time, yielding after each
        ``(op type, node name, [(slot, value, declared TensorType or None) per output], [input
        slots])``; slots identify values across plans of one program. The values are the plan's
        own (the caller must not modify them); with an unfused plan (``fuse=False``) every step is
        one op of the program."""
        env = self._bind(inputs)
        with np.errstate(over="ignore"):
            for step in self._steps:
                step(env)
                yield (step.label[0], step.label[1],
                       [(slot, env[slot] if slot is not None else None, ttype)
                        for slot, ttype in zip(step.out_slots, step.out_types)], step.in_slots)

    def profile(self, inputs: Mapping[str, np.ndarray], repeats: int = 100, warmup: int = 10) -> list[dict]:
        """Mean wall time of every top-level step over ``repeats`` runs on ``inputs`` (after
        ``warmup`` runs): ``[{"op": type, "node": name, "us": microseconds}]`` in program order."""
        for _ in range(warmup):
            self.run(inputs)
        totals = [0.0] * len(self._steps)
        clock = time.perf_counter
        for _ in range(repeats):
            env = self._template.copy()
            for name, slot, _user, storage, _shape in self._converters:
                value = np.asarray(inputs[name])
                env[slot] = value.astype(storage) if value.dtype != storage else value
            with np.errstate(over="ignore"):
                for index, step in enumerate(self._steps):
                    started = clock()
                    step(env)
                    totals[index] += clock() - started
        return [{"op": step.label[0], "node": step.label[1], "us": round(total / repeats * 1e6, 2)}
                for step, total in zip(self._steps, totals)]


def build_plan(program, function_name: str, precision: str, blobs: BlobStore | None,
               pool: ConstantPool | None = None, *, fuse: bool = True) -> ExecutionPlan:
    """Compile ``program.functions[function_name]`` (a ``MIL_pb2.Program``) into a plan.

    ``pool``: the model's constant pool, shared by its plans (one is made for this plan if None).
    ``fuse``: inline single-use producers into their consumers (bit-identical; False for tests
    that compare against the unfused plan)."""
    dtypes.check_precision(precision)
    if function_name not in program.functions:
        raise ModelFormatError(
            f"program has no function '{function_name}' (functions: {sorted(program.functions)})"
        )
    function = program.functions[function_name]
    opset = function.opset
    try:
        opset_name(opset)
    except ValueError:
        raise ModelFormatError(f"function '{function_name}' has unknown opset {opset!r}") from None
    if opset not in function.block_specializations:
        raise ModelFormatError(f"function '{function_name}' has no block for its opset {opset}")
    block = function.block_specializations[opset]
    inputs = []
    for value in function.inputs:
        ttype = tensor_type_from_proto(value.type, f"function input '{value.name}'")
        if ttype is None:
            raise ModelFormatError(f"function input '{value.name}' is not a tensor")
        inputs.append(IOSpec(value.name, ttype))
    # With every input shape fixed, every op sees the same shapes and dtypes on every run, so the
    # output checks need to run once; flexible inputs keep them on every run.
    static = all(spec.type.static_shape is not None for spec in inputs)
    compiler = _Compiler(opset, precision, blobs, function_name=function_name,
                         pool=ConstantPool() if pool is None else pool, check_once=static)
    compiler.check_supported(block)
    compiler.uses, writes_state = _value_uses(block)
    compiler.fuse = fuse and not writes_state  # moving a read past a state write would change it
    scope = _Scope()
    block_plan = compiler.compile_block(block, scope, [(spec.name, spec.type) for spec in inputs])
    outputs = [
        IOSpec(name, compiler.types[slot]) for name, slot in zip(block.outputs, block_plan.output_slots)
    ]
    states = [
        (value.name, slot)
        for value, slot in zip(function.inputs, block_plan.input_slots)
        if value.type.WhichOneof("type") == "stateType"
    ]
    return ExecutionPlan(
        function_name=function_name,
        opset=opset_name(opset),
        precision=precision,
        inputs=inputs,
        outputs=outputs,
        input_slots=block_plan.input_slots,
        output_slots=block_plan.output_slots,
        steps=block_plan.steps,
        template=compiler.template,
        op_count=_count_ops(block),
        state_slots=states,
        prepared_count=compiler.prepared_count,
        check_once=static,
    )


def _value_uses(block) -> tuple[dict[str, int], bool]:
    """How often each value name is read (op inputs and block outputs, nested blocks included),
    and whether the block writes a state."""
    uses: dict[str, int] = {}
    writes_state = False

    def walk(b):
        nonlocal writes_state
        for name in b.outputs:
            uses[name] = uses.get(name, 0) + 1
        for op in b.operations:
            writes_state = writes_state or op.type == "write_state"
            for argument in op.inputs.values():
                for binding in argument.arguments:
                    if binding.WhichOneof("binding") == "name":
                        uses[binding.name] = uses.get(binding.name, 0) + 1
            for nested in op.blocks:
                walk(nested)

    walk(block)
    return uses, writes_state


def _count_ops(block) -> int:
    return sum(1 + sum(_count_ops(b) for b in op.blocks) for op in block.operations)
