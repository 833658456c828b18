"""Validate one component: every available Core ML backend streamed over the reference job's
validation inputs (state carried by the one generic driver), compared output by output with the
source model's outputs and at the task level, with latency per backend."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from kiln.config import ComponentConfig, ModelConfig
from kiln.foundation.errors import ParityError
from kiln.mil.errors import MilError
from kiln.family.spec import ComponentSpec, PlotSeries, stream
from kiln.validate import backends as bk
from kiln.validate.metrics import Tolerance, compare, finite_tree
from kiln.validate.kinds import kind_metrics
from kiln.validate.reference import Reference
from kiln.validate.timing import latency_summary, timed

log = logging.getLogger("kiln.validate")


def stack(steps: list[dict], output: str) -> np.ndarray:
    return np.stack([np.asarray(s[output]) for s in steps])


def norm_series(output: str) -> PlotSeries:
    """The L2 norm of ``output`` per step: what to plot for a component whose family names no series."""
    return PlotSeries(f"L2 norm of '{output}' per step",
                      lambda steps: np.array([float(np.linalg.norm(np.asarray(s[output], dtype=np.float64)))
                                              for s in steps]))


def executor_error(exc: MilError, step: int | None) -> dict:
    """What a parity record keeps of an executor error: its type, the op (type, opset, node) when the
    error names one, the step of the stream it happened at (None: while building the plan)."""
    return {"error": type(exc).__name__, "op": getattr(exc, "op_type", None), "opset": getattr(exc, "opset", None),
            "node": getattr(exc, "node", None), "step": step, "message": str(exc)}


def coreml_backends(artifact: Path, component: ComponentConfig, precisions,
                    errors: dict[str, dict] | None = None) -> tuple[list[bk.Backend], dict[str, str]]:
    """kiln's executor in ``precisions`` and Apple's runtime per configured compute unit on
    ``artifact``; returns (present backends, absent backend -> reason). A precision whose plan cannot
    be built (e.g. an op kiln does not implement) goes into ``errors`` (backend -> :func:`executor_error`)
    when given, so the other backends still run; without ``errors`` it raises."""
    present: list[bk.Backend] = []
    for precision in precisions:
        try:
            present.append(bk.kiln_backend(artifact, precision))
        except MilError as exc:
            if errors is None:
                raise
            errors[f"kiln_{precision}"] = executor_error(exc, None)
            log.error("  kiln_%s: %s", precision, exc)
    absent: dict[str, str] = {}
    for unit in component.export.runtime_compute_units:
        backend = bk.apple_backend(artifact, unit)
        if isinstance(backend, bk.Absent):
            absent[backend.name] = backend.reason
        else:
            present.append(backend)
    return present, absent


def stream_backends(spec: ComponentSpec, component: ComponentConfig, present: list[bk.Backend],
                    absent: dict[str, str], reference: Reference,
                    errors: dict[str, dict] | None = None) -> tuple[dict, dict]:
    """Stream the reference feeds through each present backend (state carried from the backend's
    own outputs), timing every call. Returns (steps per backend, latency per backend); absent
    backends get null latency, never a number. A backend whose executor fails (an op raises) goes
    into ``errors`` with null latency and the next backend runs; without ``errors`` it raises."""
    steps, latency = {}, {}
    for backend in present:
        predict, times = timed(backend.predict)
        started = time.perf_counter()
        try:
            steps[backend.name] = stream(predict, spec, reference.feeds, reference.initial, component)
        except MilError as exc:
            if errors is None:
                raise
            # the failed call appended no time: len(times) is the index of the step that failed
            errors[backend.name] = executor_error(exc, len(times))
            latency[backend.name] = None
            log.error("  %-28s failed at step %d: %s", backend.name, len(times), exc)
            continue
        latency[backend.name] = latency_summary(times)
        log.info("  %-28s %4d steps, median %.3f ms/step (%.1f s)", backend.name, len(times),
                 latency[backend.name]["median_ms"], time.perf_counter() - started)
    for name in absent:
        latency[name] = None
    return steps, latency


def _failed_metrics(error: dict, tol: Tolerance) -> dict:
    """The metrics of an output its backend never produced: none, unmatched, the error named."""
    where = "building the plan" if error["step"] is None else f"step {error['step']}"
    return {"max_abs": None, "max_rel": None, "psnr_db": None, "quality": None, "atol": tol.atol,
            "rtol": tol.rtol, "min_psnr_db": tol.min_psnr_db, "match": False, "op": error["op"],
            "error": error["error"], "problem": f"executor error at {where}: {error['message']}"}


def parity_entries(component: ComponentConfig, steps: dict[str, list[dict]], reference: str,
                   only: tuple[str, ...] | None = None, errors: Mapping[str, dict] | None = None) -> list[dict]:
    """Each backend's outputs (``only`` these, when given) against ``reference``'s; a backend in
    ``errors`` (its executor failed) gets one failed row per output naming the op."""
    entries = []
    failed = dict(errors or {})
    for backend in [*steps, *(b for b in failed if b not in steps)]:
        if backend == reference or (only is not None and backend not in only):
            continue
        precision = backend.removeprefix("kiln_") if backend.startswith("kiln_") else None
        for spec in component.outputs:
            settings = dict(component.validate.tolerance(spec.name))
            report_only = bool(settings.pop("report_only", False))
            tol = Tolerance(**settings)
            if backend in failed:
                metrics = _failed_metrics(failed[backend], tol)
            else:
                ref, got = stack(steps[reference], spec.name), stack(steps[backend], spec.name)
                metrics = compare(ref, got, tol)
                if spec.kind is not None and ref.shape == got.shape:   # what the output is judges it too
                    metrics["by_kind"] = finite_tree(kind_metrics(spec.kind, ref, got))
            entries.append({"output": spec.name, "backend": backend, "reference": reference,
                            "precision": precision, **metrics,
                            **({"report_only": True} if report_only else {})})
    return entries


def _bound_precision(backend: str, component: ComponentConfig) -> str | None:
    """Which ``task_bounds`` column judges ``backend``: kiln's modes their own, Apple's runtime the
    package's compute precision; None for the source's runtimes (not judged)."""
    if backend.startswith("kiln_"):
        return backend.removeprefix("kiln_")
    if backend.startswith("coreml_"):
        return "fp16" if component.export.compute_precision == "float16" else "fp32"
    return None


def _lookup(tree, path: str):
    for key in path.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def task_bound_checks(component: ComponentConfig, task: Mapping[str, dict]) -> list[dict]:
    """Every configured task bound (``validate.task_bounds``) against each backend's task metrics:
    ``{"metric", "backend", "value", "bound", "kind" (min/max), "passed"}``. A metric the family did
    not produce fails (a bound on nothing would gate nothing)."""
    checks = []
    for path, by_precision in sorted(component.validate.task_bounds.items()):
        kind = path.rsplit(".", 1)[-1].split("_", 1)[0]
        for backend, metrics in task.items():
            precision = _bound_precision(backend, component)
            if precision not in by_precision:
                continue
            bound = float(by_precision[precision])
            value = _lookup(metrics, path)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
                (value >= bound if kind == "min" else value <= bound)
            checks.append({"metric": path, "backend": backend, "value": value, "bound": bound, "kind": kind,
                           "passed": bool(ok)})
    return checks


def check_parity(model: str, component: ComponentConfig, entries: list[dict],
                 bounds: list[dict] = ()) -> list[str]:
    """Human-readable failures (parity entries, then task bounds); raises :class:`ParityError`
    unless the component is report-only."""
    failures, blocking = [], []
    for b in bounds:
        if b["passed"]:
            continue
        value = "missing" if b["value"] is None else f"{b['value']:.6g}"
        line = (f"{model}/{component.name} task metric {b['metric']} on {b['backend']}: {value} "
                f"({'at least' if b['kind'] == 'min' else 'at most'} {b['bound']:g} required by validate.task_bounds)")
        if b["backend"] in component.validate.report_only_backends:
            line += " (report-only)"
        else:
            blocking.append(line)
        failures.append(line)
    for e in entries:
        if e["match"]:
            continue
        psnr = "n/a" if e["psnr_db"] is None else f"{e['psnr_db']:.1f} dB"
        if "agreement" in e:
            detail = f"{e['agreement']:.1%} of elements equal (min_agreement {e['min_agreement']:.1%})"
        else:
            detail = e.get("problem") or (f"max |diff| {e['max_abs']:.3g} (atol {e['atol']:g}, "
                                          f"rtol {e['rtol']:g}), PSNR {psnr} (min {e['min_psnr_db']})")
        line = f"{model}/{component.name} output '{e['output']}' on {e['backend']}: {detail}"
        if e["backend"] in component.validate.report_only_backends or e.get("report_only"):
            line += " (report-only)"
        else:
            blocking.append(line)
        failures.append(line)
    if blocking and not component.validate.report_only:
        raise ParityError("parity check failed:\n  " + "\n  ".join(blocking) +
                          "\n(set validate.report_only: true on the component to record without failing)")
    return failures


def validate_component(spec: ComponentSpec, model: ModelConfig, component: ComponentConfig,
                       facts: Mapping[str, Any], reference: Reference, artifact: Path,
                       plots_dir: Path | None = None, source_runtimes: tuple = ()) -> dict:
    """Everything metadata.json records about one component's parity, task metrics and latency.

    ``source_runtimes``: backends running the original source in its own runtime (onnxruntime for
    an ONNX graph); each is compared with torch, and every Core ML backend also with each of them."""
    from kiln.validate import plots

    log.info("validating %s/%s: %s (%d steps)", model.name, component.name,
             reference.meta.get("description", "reference inputs"), reference.steps)
    from kiln.validate import fp16

    # the fp16 report first: an fp16 op that overflows fails the component before anything else runs
    fp16_started = time.perf_counter()
    try:
        fp16_report, fp16_ops = fp16.fp16_report(artifact, spec, component, reference)
    except MilError as exc:
        # an op kiln cannot execute: the parity rows below name it (one failed row per output)
        fp16_report, fp16_ops = None, []
        log.error("  fp16 report: not measured: %s", exc)
    else:
        fp16_report["seconds"] = round(time.perf_counter() - fp16_started, 3)
        log.info("  fp16 report: %d ops (%d fp16) on steps %s, max |activation| %.4g, %d near fp16's range, "
                 "max error %.3g (%.1f s)", fp16_report["ops"], fp16_report["fp16_ops"], fp16_report["steps"],
                 fp16_report["max_abs"], fp16_report["near_range_count"], fp16_report["max_error"],
                 fp16_report["seconds"])
        fp16.check_overflow(f"{model.name}/{component.name}", fp16_report)
    errors: dict[str, dict] = {}
    present, absent = coreml_backends(artifact, component, component.validate.precisions, errors)
    coreml = tuple(b.name for b in present) + tuple(errors)
    steps, latency = stream_backends(spec, component, [*source_runtimes, *present], absent, reference, errors)
    for backend in errors:
        latency.setdefault(backend, None)
    name = "torch_cpu"
    steps = {name: reference.outputs, **steps}
    entries = parity_entries(component, steps, name, errors=errors)
    for runtime in source_runtimes:
        entries += parity_entries(component, steps, runtime.name, only=coreml, errors=errors)
    task = {backend: finite_tree(spec.task_metrics(steps[name], s, facts))
            for backend, s in steps.items() if backend != name}
    bounds = task_bound_checks(component, task)
    failures = check_parity(model.name, component, entries, bounds)
    plot_files = []
    if plots_dir is not None:
        # every component gets a parity plot (the report shows one per component): its family's
        # series, else the first output's L2 norm per step
        series = spec.plot or norm_series(component.outputs[0].name)
        path = Path(plots_dir) / f"{component.name}_parity.png"
        step_seconds = reference.meta.get("step_seconds")
        versus = "".join(f"{r.name}, " for r in source_runtimes)
        plots.parity_plot(path, f"{model.name}/{component.name}: torch vs {versus}Core ML (kiln executor)"
                          + (" [synthetic weights]" if model.synthetic else ""), series.label,
                          step_seconds or 1.0, series.fn(steps[name]),
                          {n: series.fn(s) for n, s in steps.items() if n != name},
                          x_label="time (s)" if step_seconds else "step")
        plot_files.append(str(path))
        path = Path(plots_dir) / f"{component.name}_fp16.png"
        where = (f"steps {fp16_report['steps']}" if fp16_report is not None
                 else "not measured: the executor failed, see the parity rows")
        plots.fp16_plot(path, f"{model.name}/{component.name}: fp16 range and rounding error per op "
                        f"(compute {component.export.compute_precision}, {where})"
                        + (" [synthetic weights]" if model.synthetic else ""), fp16_ops,
                        fp16.FP16_MAX, fp16.FP16_MAX / fp16.RISK_FACTOR)
        plot_files.append(str(path))
        if spec.artifacts is not None:
            written = spec.artifacts(Path(plots_dir), component.name, facts, steps[name],
                                     {n: s for n, s in steps.items() if n != name})
            plot_files.extend(str(p) for p in written)
        path = Path(plots_dir) / f"{component.name}_latency.png"
        plots.latency_plot(path, f"{model.name}/{component.name}: latency per backend",
                           {k: (v["median_ms"] if v else None) for k, v in latency.items()},
                           absent_note=next(iter(absent.values()), ""))
        plot_files.append(str(path))
    return {
        "validation": {
            "inputs": reference.meta.get("description", ""),
            "steps": reference.steps,
            "reference_backend": name,
            "report_only": component.validate.report_only,
            "passed": not failures,
            "report_only_backends": list(component.validate.report_only_backends),
            "failures": failures,
            "task_bounds": bounds,
        },
        "parity": entries,
        "task_metrics": task,
        "latency": latency,
        "absent_backends": absent,
        "backend_errors": errors,
        "fp16_report": fp16_report,
        "plots": plot_files,
    }
