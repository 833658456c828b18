"""Execution plans: a compiled MIL function (see :mod:`kiln.mil.compiler`), run many times. ``run``
copies a template of the value slots (constants pre-filled), stores the inputs checked against the
contract, and calls the steps in order."""

from __future__ import annotations

import time
from typing import Mapping

import numpy as np

from .errors import InputContractError
from .plan_io import IOSpec, Prediction


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
