"""Trace one component with its fixed shapes and convert it to an ML Program."""

from __future__ import annotations

import contextlib
import io
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from kiln.config import ComponentConfig, ExportSettings
from kiln.foundation.errors import ExportError
from kiln.export import torch_ops
from kiln.export.package import save_mlpackage
from kiln.export.passes import validation_per_pipeline
from kiln.family.spec import FamilySpec, check_outputs

log = logging.getLogger("kiln.export")

TARGETS = {"iOS15": "iOS15", "iOS16": "iOS16", "iOS17": "iOS17", "iOS18": "iOS18"}
SPEC_VERSIONS = {"iOS15": 6, "iOS16": 7, "iOS17": 8, "iOS18": 9}


def _ct():
    import coremltools as ct  # imported lazily: it prints warnings and costs seconds
    return ct


def coreml_dtype(dtype: str):
    return {"float32": np.float32, "float16": np.float16, "int32": np.int32}[dtype]


def trace_component(wrapper: torch.nn.Module, component: ComponentConfig,
                    example: Mapping[str, np.ndarray]) -> torch.jit.ScriptModule:
    args = tuple(torch.from_numpy(np.ascontiguousarray(example[t.name])) for t in component.inputs)
    with torch.no_grad():
        outputs = wrapper(*args)
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        check_outputs(component, outputs)
        try:
            return torch.jit.trace(wrapper, args, check_trace=False, strict=False)
        except Exception as exc:
            raise ExportError(f"{component.model}/{component.name}: torch.jit.trace failed: {exc}") from exc


def compute_precision(settings: ExportSettings, report: dict | None = None):
    """coremltools' compute precision for ``settings``: fp16 keeps phase accumulators and the
    ops of ``settings.fp32_ops`` in fp32 (:mod:`kiln.export.precision`), fp32 is fp32 throughout."""
    ct = _ct()
    if settings.compute_precision == "float32":
        return ct.precision.FLOAT32
    from kiln.export.precision import fp16_op_selector

    return ct.transform.FP16ComputePrecision(op_selector=fp16_op_selector(report, settings.fp32_ops))


def convert_traced(traced, component: ComponentConfig, settings: ExportSettings, report: dict | None = None):
    """``report`` (optional) receives what the fp16 policy kept in fp32 (``fp32_op_types``)."""
    ct = _ct()
    torch_ops.register()
    inputs = [ct.TensorType(name=t.name, shape=t.shape, dtype=coreml_dtype(t.dtype))
              for t in component.inputs]
    # With fp16 compute precision at iOS16+, I/O silently becomes fp16 unless each type names it.
    outputs = [ct.TensorType(name=t.name, dtype=coreml_dtype(t.dtype)) for t in component.outputs]
    precision = compute_precision(settings, report)
    try:
        # coremltools prints progress bars on stdout; keep job logs readable. One program validation
        # per pass pipeline instead of one per pass: a third of the conversion's CPU (kiln.export.passes)
        with contextlib.redirect_stdout(io.StringIO()), validation_per_pipeline():
            mlmodel = ct.convert(
                traced,
                inputs=inputs,
                outputs=outputs,
                convert_to="mlprogram",
                minimum_deployment_target=getattr(ct.target, TARGETS[settings.deployment_target]),
                compute_precision=precision,
                compute_units=getattr(ct.ComputeUnit, settings.compute_units),
                skip_model_load=True,
            )
    except Exception as exc:
        raise ExportError(f"{component.model}/{component.name}: ct.convert failed: "
                          f"{type(exc).__name__}: {exc}") from exc
    if settings.compute_precision == "float16" and settings.fp32_ops and report is not None:
        missing = sorted(set(settings.fp32_ops) - set(report.get("named_fp32_ops_seen", ())))
        if missing:
            raise ExportError(f"{component.model}/{component.name}: export.fp32_ops names op(s) the converted "
                              f"program does not have: {', '.join(missing)} (names are the ops' MIL names, "
                              "as the component's fp16 report in metadata.json lists them)")
    spec_version = mlmodel.get_spec().specificationVersion
    expected = SPEC_VERSIONS[settings.deployment_target]
    if spec_version != expected:
        raise ExportError(f"{component.model}/{component.name}: converted spec version {spec_version}, "
                          f"expected {expected} for {settings.deployment_target}")
    return mlmodel


def trace(family: FamilySpec, source: Any, component: ComponentConfig,
          facts: Mapping[str, Any]) -> torch.jit.ScriptModule:
    """Build ``component``'s wrapper from the loaded source and trace it with its fixed contract."""
    spec = family.check_contract(component, facts)
    wrapper = spec.wrapper(source, component, facts).eval()
    return trace_component(wrapper, component, spec.example_inputs(component, facts))


def export_traced(traced, component: ComponentConfig, out: str | Path, *,
                  metadata: Mapping[str, str] | None = None) -> dict:
    """Convert a traced program (from the prepare job's ``.pt`` file) and save ``out`` (an
    ``.mlpackage``, deterministic). Returns what was done (spec version, opset, timings)."""
    started = time.perf_counter()
    policy: dict = {}
    mlmodel = convert_traced(traced, component, component.export, policy)
    converted_at = time.perf_counter()
    mlmodel.short_description = component.description or f"{component.model} {component.name}"
    mlmodel.author = "kiln"
    for key, value in sorted((metadata or {}).items()):
        mlmodel.user_defined_metadata[key] = str(value)
    save_mlpackage(mlmodel, out)
    saved_at = time.perf_counter()
    spec = mlmodel.get_spec()
    return {
        "specification_version": spec.specificationVersion,
        "opset": next(iter(spec.mlProgram.functions["main"].block_specializations), None),
        "seconds": {"convert": round(converted_at - started, 4), "save": round(saved_at - converted_at, 4)},
        # ops the fp16 policy kept in fp32 (phase accumulators), by type; empty for fp32 compute
        "fp32_op_types": dict(sorted(policy.get("fp32_op_types", {}).items())),
        **({"fp32_fallback_ops": list(policy.get("named_fp32_ops_seen", []))} if component.export.fp32_ops else {}),
    }


def export_component(family: FamilySpec, source: Any, component: ComponentConfig, out: str | Path,
                     *, facts: Mapping[str, Any] | None = None,
                     metadata: Mapping[str, str] | None = None) -> dict:
    """Trace and export in one process (tests, benchmarks); the workflow splits this into the
    prepare job (trace) and the export job (convert)."""
    facts = family.facts(source) if facts is None else facts
    started = time.perf_counter()
    traced = trace(family, source, component, facts)
    report = export_traced(traced, component, out, metadata=metadata)
    report["seconds"]["trace"] = round(time.perf_counter() - started - sum(report["seconds"].values()), 4)
    return report
