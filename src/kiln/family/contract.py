"""A component's contract stated once: names, dtypes and shapes as expressions of the model's facts
and the entry's options (``[1, n_mels, mel_frames]``), declared by the family beside its component
spec, resolved by one resolver.

:class:`Tensor` is one input or output (its shape's axes are ints or expressions over names);
:class:`Contract` holds a spec's inputs and outputs and an optional ``values(facts, options)`` hook
for derived sizes (Parakeet EOU's ``chunk_samples``, ``mel_frames``: computed and checked once).
:func:`resolve` turns a contract into concrete shapes for one config entry; :func:`names_problem`
and :func:`check` are the one checker of an entry's explicit names, dtypes and shapes (config.yaml)
against it, naming model, component, tensor and axis, for every family (the consumer contracts,
``contracts/*.yaml``, are compared with the same resolution: :mod:`kiln.distribution.contracts`). Expressions are integer arithmetic only (``+ - * //``, parentheses, names, integers), parsed
with :mod:`ast`, never evaluated as Python.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from kiln.foundation.errors import ContractError, ModelError

Axis = int | str


@dataclass(frozen=True)
class Tensor:
    """One named input or output: ``shape`` axes are ints or expressions (``"n_layers"``,
    ``"chunk_ms * sample_rate // 1000"``)."""

    name: str
    shape: tuple[Axis, ...]
    dtype: str = "float32"


def f32(name: str, *shape: Axis) -> Tensor:
    return Tensor(name, tuple(shape), "float32")


def i32(name: str, *shape: Axis) -> Tensor:
    return Tensor(name, tuple(shape), "int32")


@dataclass(frozen=True)
class Contract:
    """A component spec's symbolic contract. ``values(facts, options)``: derived names the shapes
    use (it may raise, naming what does not fit, e.g. a chunk off the native attention chunk)."""

    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    values: Callable[[Mapping[str, Any], Mapping[str, Any]], Mapping[str, int]] | None = None

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)


_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
        ast.FloorDiv: lambda a, b: a // b}


def evaluate(expression: Axis, names: Mapping[str, Any], where: str) -> int:
    """The integer an axis ``expression`` gives with ``names`` (facts, options, derived values)."""
    if isinstance(expression, int):
        return expression
    try:
        tree = ast.parse(expression, mode="eval").body
    except SyntaxError:
        raise ModelError(f"{where}: {expression!r} is not an axis expression") from None

    def walk(node) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise ModelError(f"{where}: {expression!r} needs '{node.id}', which neither the facts nor the "
                                 f"options give (re-run the prepare job; known: {', '.join(sorted(names))})")
            value = names[node.id]
            if not isinstance(value, int) or isinstance(value, bool):
                raise ModelError(f"{where}: '{node.id}' is {value!r}, not an integer")
            return value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        raise ModelError(f"{where}: {expression!r}: only integers, names, + - * // and parentheses")

    return walk(tree)


def resolve(contract: Contract, facts: Mapping[str, Any], options: Mapping[str, Any],
            where: str = "contract") -> dict:
    """``{"inputs": {name: {"shape", "dtype"}}, "outputs": {...}}`` (declared order) for one entry."""
    names = {**facts, **options}
    if contract.values is not None:
        names.update(contract.values(facts, options))
    return {side: {t.name: {"shape": [evaluate(axis, names, f"{where}.{side}.{t.name}") for axis in t.shape],
                            "dtype": t.dtype}
                   for t in getattr(contract, side)}
            for side in ("inputs", "outputs")}


def samples_of(seconds: Any, rate: int, where: str) -> int:
    """The whole number of samples ``seconds`` is at ``rate`` Hz (an option's window), or a
    :class:`ContractError` naming ``where``."""
    samples = seconds * rate
    if abs(samples - round(samples)) > 1e-6:
        raise ContractError(f"{where}: {seconds} s is not a whole number of samples at {rate} Hz")
    return int(round(samples))


def names_problem(component, inputs: tuple[str, ...], outputs: tuple[str, ...], owner: str) -> tuple[str, str] | None:
    """(key, what is wrong) when ``component``'s (a ComponentConfig) input/output names differ from
    ``inputs``/``outputs`` (``owner`` names whose they are: "the kokoro family's kokoro"), else None.
    A side the entry omits takes the declared names; a side that names tensors only for their
    ``kind`` (no shape, no dtype) may name some of them, in any order; a side stated with shapes
    states all of them, in order."""
    where = f"models.{component.model}.components.{component.name}"
    for kind, tensors, declared in (("inputs", component.inputs, inputs), ("outputs", component.outputs, outputs)):
        configured = [t.name for t in tensors]
        labels_only = all(t.shape is None and t.dtype is None for t in tensors)
        if labels_only and set(configured) <= set(declared):
            continue
        if tuple(configured) != tuple(declared):
            missing = [n for n in declared if n not in configured]
            unknown = [n for n in configured if n not in declared]
            detail = "; ".join(filter(None, [
                f"missing {missing}" if missing else "", f"unknown {unknown}" if unknown else "",
                "order differs" if not missing and not unknown else ""]))
            return f"{where}.{kind}", f"{list(configured)} do not match {owner} ({list(declared)}): {detail}"
    return None


def differences(expected: Mapping[str, Mapping[str, dict]], got: Mapping[str, Mapping[str, dict]],
                where: str) -> list[dict]:
    """Every way ``got`` falls short of ``expected`` (both ``{"inputs"|"outputs": {name: {"shape",
    "dtype"}}}``; an expected shape or axis of None matches anything): the one comparison of shapes
    behind every check (config.yaml's explicit shapes, a consumer contract, a built package's
    features). Each difference: ``{"where", "expected", "built"}`` (+ ``"axis"`` when one axis
    differs, ``"available"`` when a tensor is missing)."""
    problems = []
    for side in ("inputs", "outputs"):
        offered = got.get(side, {})
        for name, want in expected.get(side, {}).items():
            at = f"{where}.{side}.{name}"
            have = offered.get(name)
            if have is None:
                problems.append({"where": at, "expected": dict(want), "built": "missing", "available": sorted(offered)})
                continue
            shape, wanted = have.get("shape"), want.get("shape")
            problem = {"where": at, "expected": dict(want), "built": dict(have)}
            if want.get("dtype") is not None and have.get("dtype") != want.get("dtype"):
                problems.append(problem)
            elif wanted is not None and (shape is None or len(shape) != len(wanted)):
                problems.append(problem)
            elif wanted is not None:
                axis = next((i for i, (w, g) in enumerate(zip(wanted, shape)) if w is not None and w != g), None)
                if axis is not None:
                    problems.append({**problem, "axis": axis})
    return problems


def features(component) -> dict:
    """``{"inputs"|"outputs": {name: {"shape", "dtype"}}}`` of a ComponentConfig's explicit tensors
    (None where the entry states no shape or dtype: it matches anything in :func:`differences`)."""
    return {side: {t.name: {"shape": None if t.shape is None else list(t.shape), "dtype": t.dtype}
                   for t in getattr(component, side)}
            for side in ("inputs", "outputs")}


def check(component, resolved: Mapping[str, Mapping[str, dict]], family: str) -> None:
    """``component``'s (a ComponentConfig) explicit shapes and dtypes against ``resolved``
    (:func:`differences`): the first difference is a :class:`ContractError` naming the model,
    component, tensor and axis."""
    where = f"models.{component.model}.components.{component.name}"
    for side in ("inputs", "outputs"):
        for tensor in getattr(component, side):
            if tensor.name not in resolved[side]:
                raise ContractError(f"{where}.{side}.{tensor.name}: the {family} family's {component.spec} has no "
                                    f"{side[:-1]} '{tensor.name}' (it has: {', '.join(resolved[side])})")
    for problem in differences(features(component), resolved, where):
        got, want = problem["expected"], problem["built"]   # config.yaml's, the family's resolution
        if got["dtype"] is not None and got["dtype"] != want["dtype"]:
            raise ContractError(f"{problem['where']}: dtype {got['dtype']}, the family's contract gives {want['dtype']}")
        if "axis" not in problem:
            raise ContractError(f"{problem['where']}: shape {got['shape']} has {len(got['shape'])} axes, the "
                                f"family's contract gives {want['shape']} from the facts and options")
        axis = problem["axis"]
        raise ContractError(f"{problem['where']}: axis {axis} is {got['shape'][axis]} in {got['shape']}, the family's "
                            f"contract gives {want['shape'][axis]} ({want['shape']}) from the facts and options")
