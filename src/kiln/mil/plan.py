"""Execution plans: a MIL function compiled once, run many times.

Building a plan resolves every op to its registered implementation (failing with
:class:`UnsupportedOpError` before anything runs), materialises ``const`` and every
``constexpr_*`` value, and turns each remaining op into a pre-bound step closure that reads its
dynamic inputs from a flat list of value slots and writes its outputs back. ``run`` copies a
template of that list (constants pre-filled), stores the inputs, and calls the steps in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from kiln.errors import KilnError

from . import dtypes
from .errors import InputContractError, ModelFormatError, OpExecutionError, UnsupportedOpError
from .registry import OpContext, OpImpl, lookup, opset_name
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


def _make_output_fixer(ttype: TensorType | None, precision: str) -> Callable:
    """Coerce an op result to its declared dtype and check its declared static shape."""
    if ttype is None:
        return lambda value: value
    storage = ttype.dtype.storage
    expected_shape = ttype.static_shape
    name = ttype.dtype.name
    if name == "string":
        return lambda value: value
    round_fp16 = precision == dtypes.FP16 and name == "fp16"
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
            value = value.astype(np.float16).astype(np.float32)
        elif round_bf16:
            value = dtypes.round_to_bf16(value)
        if expected_shape is not None and value.shape != expected_shape:
            raise ValueError(
                f"result has shape {list(value.shape)}, the program declares {list(expected_shape)}"
            )
        return value

    return fix


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


class _Compiler:
    def __init__(self, opset: str, precision: str, blobs: BlobStore | None):
        self.opset = opset
        self.precision = precision
        self.blobs = blobs
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
        steps: list = []
        for op in block.operations:
            step = self.compile_op(op, scope)
            if step is not None:
                steps.append(step)
        output_slots = [self.resolve(scope, name, "block output") for name in block.outputs]
        return BlockPlan(steps, input_slots, output_slots)

    # -- ops -------------------------------------------------------------------------------
    def compile_op(self, op, scope: _Scope):
        node = _node_name(op)
        impl: OpImpl | None = lookup(op.type, self.opset)
        if impl is None:  # check_supported ran first; keep the guarantee local too
            raise UnsupportedOpError(op.type, opset_name(self.opset), node)
        where = f"op '{op.type}' producing '{node}'"
        const_kwargs: dict = {}
        for key, value in op.attributes.items():
            if key == "name":
                continue
            const_kwargs[key] = decode_value(value, self.blobs, f"{where}, attribute '{key}'")
        dynamic: list[tuple[str, int]] = []
        tuples: list[tuple[str, list]] = []
        for param, argument in op.inputs.items():
            items = []  # (slot or None, constant value)
            for binding in argument.arguments:
                kind = binding.WhichOneof("binding")
                if kind == "name":
                    slot = self.resolve(scope, binding.name, where)
                    if self.is_const[slot]:
                        items.append((None, self.template[slot]))
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

        output_types = [tensor_type_from_proto(o.type, f"{where}, output '{o.name}'") for o in op.outputs]
        label = (op.type, opset_name(self.opset), node)

        if impl.constexpr:
            if dynamic or tuples:
                raise ModelFormatError(f"{where}: a constant op with non-constant inputs")
            try:
                result = impl.fn(**const_kwargs)
                results = list(result) if isinstance(result, tuple) else [result]
                if len(results) != len(op.outputs):
                    raise ValueError(f"produced {len(results)} values for {len(op.outputs)} outputs")
                fixed = [
                    _make_output_fixer(t, dtypes.FP16)(r) if not isinstance(r, str) else r
                    for t, r in zip(output_types, results)
                ]
            except KilnError:
                raise
            except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, OverflowError,
                    MemoryError, AttributeError) as exc:
                raise OpExecutionError(*label, f"{type(exc).__name__}: {exc}") from None
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
            fixers = [_make_output_fixer(self.types[target[0]], self.precision)]
            return _make_step(impl, const_kwargs, dynamic, tuples, out_slots, fixers, context, label)
        out_slots = [self.new_slot(scope, o.name, t) for o, t in zip(op.outputs, output_types)]
        fixers = [_make_output_fixer(t, self.precision) for t in output_types]
        return _make_step(impl, const_kwargs, dynamic, tuples, out_slots, fixers, context, label)


def _node_name(op) -> str:
    if len(op.outputs):
        return op.outputs[0].name
    name = op.attributes.get("name")
    if name is not None and name.immediateValue.tensor.strings.values:
        return name.immediateValue.tensor.strings.values[0]
    return "<unnamed>"


_CAUGHT = (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, OverflowError,
           MemoryError, AttributeError, RuntimeError, FloatingPointError)


def _make_step(impl, const_kwargs, dynamic, tuples, out_slots, fixers, context, label):
    fn = impl.fn
    n_out = len(out_slots)
    op_type, opset, node = label

    def fail(exc):
        return OpExecutionError(op_type, opset, node, f"{type(exc).__name__}: {exc}")

    if context is None and not tuples and n_out == 1:
        slot = out_slots[0]
        fix = fixers[0]
        if len(dynamic) == 1 and not const_kwargs:
            (param, in_slot), = dynamic

            def step(env):
                try:
                    env[slot] = fix(fn(**{param: env[in_slot]}))
                except KilnError:
                    raise
                except _CAUGHT as exc:
                    raise fail(exc) from exc

            return step

        def step(env):
            kwargs = const_kwargs.copy()
            for param, in_slot in dynamic:
                kwargs[param] = env[in_slot]
            try:
                env[slot] = fix(fn(**kwargs))
            except KilnError:
                raise
            except _CAUGHT as exc:
                raise fail(exc) from exc

        return step

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
            raise fail(exc) from exc

    return step


class ExecutionPlan:
    """A compiled MIL function. Build with :func:`build_plan` or ``LoadedModel.plan()``."""

    def __init__(self, *, function_name, opset, precision, inputs, outputs, input_slots,
                 output_slots, steps, template, op_count, state_slots=()):
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

    def run(self, inputs: Mapping[str, np.ndarray]) -> Prediction:
        """Run the function on ``inputs`` (name -> array of the declared dtype and shape)."""
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
        for step in self._steps:
            step(env)
        outputs = {}
        for name, slot, user_dtype in self._output_converters:
            value = env[slot]
            if isinstance(value, np.ndarray) and user_dtype is not None:
                value = value.astype(user_dtype)  # always a fresh array the caller owns
            outputs[name] = value
        prediction = Prediction(outputs, self.precision)
        for name, slot in self._state_slots:
            prediction.states[name] = env[slot].astype(self._state_dtypes[name])
        return prediction

    __call__ = run


def build_plan(program, function_name: str, precision: str, blobs: BlobStore | None) -> ExecutionPlan:
    """Compile ``program.functions[function_name]`` (a ``MIL_pb2.Program``) into a plan."""
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
    compiler = _Compiler(opset, precision, blobs)
    compiler.check_supported(block)
    inputs = []
    for value in function.inputs:
        ttype = tensor_type_from_proto(value.type, f"function input '{value.name}'")
        if ttype is None:
            raise ModelFormatError(f"function input '{value.name}' is not a tensor")
        inputs.append(IOSpec(value.name, ttype))
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
    )


def _count_ops(block) -> int:
    return sum(1 + sum(_count_ops(b) for b in op.blocks) for op in block.operations)
