"""The MIL op compiler: a MIL function compiled once into an :class:`ExecutionPlan`.

Building a plan resolves every op to its registered implementation (failing with
:class:`UnsupportedOpError` before anything runs), materialises ``const`` and every
``constexpr_*`` value into the constant pool, and turns each remaining op into a pre-bound step
closure that reads its dynamic inputs from a flat list of value slots and writes its outputs back
(single-use producers fused into their consumer, dead values dropped after their last read).
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import numpy as np

from kiln.foundation.errors import KilnError

from . import dtypes
from .constant_pool import ConstantPool, as_pooled, widen
from .errors import ModelFormatError, OpExecutionError, UnsupportedOpError
from .fusion import BlockFusion, value_uses
from .liveness import free_dead_values
from .ops._util import WideningScratch
from .output_checks import OutputCheck
from .plan import ExecutionPlan
from .plan_io import IOSpec
from .registry import OpContext, OpImpl, OpSpec, lookup, opset_name
from .steps import BlockPlan, Free, Node, make_generic_step, node_step, plain_kernel
from .values import BlobStore, TensorType, decode_value, tensor_type_from_proto


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
        self.fuse = fuse  # inline single-use producers into their consumer (see Node)
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
        items: list = []  # steps and Nodes in program order
        fusion = BlockFusion(self.uses)
        for op in block.operations:
            compiled = self.compile_op(op, scope)
            if compiled is None:
                continue
            if not isinstance(compiled, Node):
                compiled.label = (op.type, _node_name(op))
                compiled.out_slots = [scope.lookup(o.name) for o in op.outputs]
                compiled.out_types = [self.types[s] if s is not None else None for s in compiled.out_slots]
                compiled.in_slots = sorted(_read_slots(op, scope))
                items.append(compiled)
                self.pinned.update(compiled.in_slots)  # what it reads is opaque to liveness
                continue
            if self.fuse:
                fusion.add(compiled, op)
            items.append(compiled)
        items = fusion.remaining(items)
        output_slots = [self.resolve(scope, name, "block output") for name in block.outputs]
        if scope.parent is None:  # the function body: drop each value after its last read
            items = free_dead_values(items, self.pinned | set(output_slots) | set(input_slots),
                                     self.is_const)
        steps = [node_step(item) if isinstance(item, (Node, Free)) else item for item in items]
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
            const_kwargs = {k: v if k in impl.narrow_params else widen(v) for k, v in const_kwargs.items()}
            try:
                result = impl.fn(**const_kwargs)
                results = list(result) if isinstance(result, tuple) else [result]
                if len(results) != len(op.outputs):
                    raise ValueError(f"produced {len(results)} values for {len(op.outputs)} outputs")
                fixed = [as_pooled(r, t) for t, r in zip(output_types, results)]
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
        checks = [OutputCheck(t, self.precision, round_fp16=not exact) for t in output_types]
        kernel = None
        if impl.prepare is not None and context is None and not tuples:
            spec = OpSpec(op.type, opset_name(self.opset), self.precision, const_kwargs,
                          tuple(param for param, _ in dynamic),
                          {param: self.types[slot] for param, slot in dynamic}, output_types,
                          scratch=self.scratch)
            kernel = impl.prepare(spec)
        if kernel is not None:
            self.prepared_count += 1
            return Node(kernel, [slot for _, slot in dynamic], out_slots, checks, label, self.check_once)
        if narrow:  # the plain function takes storage dtypes
            const_kwargs = {k: widen(v) if k in narrow else v for k, v in const_kwargs.items()}
        if context is None and not tuples and op.type != "write_state":
            kernel = plain_kernel(impl.fn, const_kwargs, tuple(param for param, _ in dynamic))
            return Node(kernel, [slot for _, slot in dynamic], out_slots, checks, label, self.check_once)
        return make_generic_step(impl, const_kwargs, dynamic, tuples, out_slots, checks, context, label,
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


def _node_name(op) -> str:
    if len(op.outputs):
        return op.outputs[0].name
    name = op.attributes.get("name")
    if name is not None and name.immediateValue.tensor.strings.values:
        return name.immediateValue.tensor.strings.values[0]
    return "<unnamed>"


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
    compiler.uses, writes_state = value_uses(block)
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


def _count_ops(block) -> int:
    return sum(1 + sum(_count_ops(b) for b in op.blocks) for op in block.operations)
