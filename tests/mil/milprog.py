"""Helpers for kiln.mil tests: build a MIL program with coremltools' builder, convert it to an
``.mlpackage`` and run it with kiln."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np

_counter = itertools.count()


def ct():
    import coremltools

    return coremltools


def save_program(build, input_specs, tmp_path: Path, opset: str = "iOS17", optimize: bool = False) -> Path:
    """Convert ``build`` (a function of placeholder vars returning var(s)) to an mlpackage.

    ``input_specs`` is a list of (name, shape, numpy dtype). With ``optimize=False`` no MIL
    graph passes run, so the ops under test reach the package unchanged."""
    coremltools = ct()
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    target = getattr(coremltools.target, opset)
    specs = [
        mb.TensorSpec(shape=shape, dtype=types.numpy_type_to_builtin_type(np.dtype(dtype)))
        for _, shape, dtype in input_specs
    ]
    names = [name for name, _, _ in input_specs]

    # mb.program names the placeholders after the function's parameters: make one with ours.
    source = f"def prog({', '.join(names)}):\n    return build({', '.join(f'{n}={n}' for n in names)})\n"
    namespace = {"build": build}
    exec(source, namespace)
    prog = mb.program(input_specs=specs, opset_version=target)(namespace["prog"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = coremltools.convert(
            prog,
            convert_to="mlprogram",
            minimum_deployment_target=target,
            compute_precision=coremltools.precision.FLOAT32,
            pass_pipeline=None if optimize else coremltools.PassPipeline.EMPTY,
        )
    path = tmp_path / f"prog{next(_counter)}.mlpackage"
    model.save(str(path))
    return path


def run_program(build, inputs: dict, tmp_path: Path, opset: str = "iOS17", precision: str = "fp32",
                optimize: bool = False):
    """Build, convert and run; returns the kiln outputs in program output order (a list)."""
    from kiln.mil import load_model

    specs = [(name, value.shape, value.dtype) for name, value in inputs.items()]
    path = save_program(build, specs, tmp_path, opset, optimize)
    model = load_model(path)
    plan = model.plan(precision)
    result = plan.run(inputs)
    return [result[spec.name] for spec in plan.outputs]
