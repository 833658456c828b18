"""Validate one component: the source and every available Core ML backend, streamed over the same
real audio, compared output by output and at the task level, with latency per backend."""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from kiln.config import ComponentConfig, ModelConfig
from kiln.errors import ParityError
from kiln.models.base import ModelFamily
from kiln.validate import backends as bk
from kiln.validate.metrics import Tolerance, compare

log = logging.getLogger("kiln.validate")


def timed(predict: Callable) -> tuple[Callable, list[float]]:
    """Wrap ``predict`` to record each call's wall time in milliseconds."""
    times: list[float] = []

    def call(inputs):
        started = time.perf_counter()
        out = predict(inputs)
        times.append((time.perf_counter() - started) * 1e3)
        return out

    return call, times


def latency_summary(times_ms: list[float]) -> dict:
    ordered = sorted(times_ms)
    return {
        "calls": len(ordered),
        "median_ms": round(statistics.median(ordered), 4),
        "mean_ms": round(statistics.fmean(ordered), 4),
        "p90_ms": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 4),
    }


def stack(steps: list[dict], output: str) -> np.ndarray:
    return np.stack([np.asarray(s[output]) for s in steps])


def coreml_backends(artifact: Path, component: ComponentConfig,
                    precisions) -> tuple[list[bk.Backend], dict[str, str]]:
    """kiln's executor in ``precisions`` and Apple's runtime per configured compute unit on
    ``artifact``; returns (present backends, absent backend -> reason)."""
    present: list[bk.Backend] = [bk.kiln_backend(artifact, p) for p in precisions]
    absent: dict[str, str] = {}
    for unit in component.export.runtime_compute_units:
        backend = bk.apple_backend(artifact, unit)
        if isinstance(backend, bk.Absent):
            absent[backend.name] = backend.reason
        else:
            present.append(backend)
    return present, absent


def stream_backends(family: ModelFamily, component: ComponentConfig, present: list[bk.Backend],
                    absent: dict[str, str], audio: np.ndarray) -> tuple[dict, dict]:
    """Stream ``audio`` through each present backend, timing every call. Returns (steps per backend,
    latency per backend); absent backends get null latency, never a number."""
    steps, latency = {}, {}
    for backend in present:
        predict, times = timed(backend.predict)
        started = time.perf_counter()
        steps[backend.name] = family.stream(component, predict, audio)
        latency[backend.name] = latency_summary(times)
        log.info("  %-28s %4d steps, median %.3f ms/step (%.1f s)", backend.name, len(times),
                 latency[backend.name]["median_ms"], time.perf_counter() - started)
    for name in absent:
        latency[name] = None
    return steps, latency


def run_backends(family: ModelFamily, component: ComponentConfig, torch_wrapper, artifact: Path,
                 audio: np.ndarray) -> tuple[dict, dict, dict]:
    """Stream ``audio`` through the source and every Core ML backend. Returns (steps per backend,
    latency, absent backends)."""
    present, absent = coreml_backends(artifact, component, component.validate.precisions)
    present.insert(0, bk.torch_backend(torch_wrapper, component))
    steps, latency = stream_backends(family, component, present, absent, audio)
    return steps, latency, absent


def parity_entries(component: ComponentConfig, steps: dict[str, list[dict]], reference: str) -> list[dict]:
    entries = []
    for backend, backend_steps in steps.items():
        if backend == reference:
            continue
        precision = backend.removeprefix("kiln_") if backend.startswith("kiln_") else None
        for spec in component.outputs:
            settings = dict(component.validate.tolerance(spec.name))
            report_only = bool(settings.pop("report_only", False))
            tol = Tolerance(**settings)
            metrics = compare(stack(steps[reference], spec.name), stack(backend_steps, spec.name), tol)
            entries.append({"output": spec.name, "backend": backend, "precision": precision, **metrics,
                            **({"report_only": True} if report_only else {})})
    return entries


def check_parity(model: str, component: ComponentConfig, entries: list[dict]) -> list[str]:
    """Human-readable failures; raises :class:`ParityError` unless the component is report-only."""
    failures, blocking = [], []
    for e in entries:
        if e["match"]:
            continue
        psnr = "n/a" if e["psnr_db"] is None else f"{e['psnr_db']:.1f} dB"
        detail = e.get("problem") or (f"max |diff| {e['max_abs']:.3g} (atol {e['atol']:g}, rtol {e['rtol']:g}), "
                                      f"PSNR {psnr} (min {e['min_psnr_db']})")
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


def validate_component(family: ModelFamily, source: Any, model: ModelConfig, component: ComponentConfig,
                       artifact: Path, plots_dir: Path | None = None) -> dict:
    """Everything metadata.json records about one component's parity, task metrics and latency."""
    from kiln.validate import plots

    wrapper = family.build_component(source, component)
    audio = family.validation_audio(component)
    log.info("validating %s/%s on %.1f s of espeak-ng speech with silence and noise",
             model.name, component.name, audio.size / family.sample_rate)
    steps, latency, absent = run_backends(family, component, wrapper, artifact, audio)
    reference = "torch_cpu"
    entries = parity_entries(component, steps, reference)
    task = {name: family.task_metrics(component, steps[reference], s)
            for name, s in steps.items() if name != reference}
    failures = check_parity(model.name, component, entries)
    plot_files = []
    if plots_dir is not None:
        series = family.plot_series(component, steps[reference])
        if series is not None:
            label, ref_series = series
            n_steps = max(1, len(steps[reference]))
            step_seconds = audio.size / family.sample_rate / n_steps
            path = Path(plots_dir) / f"{component.name}_parity.png"
            plots.parity_plot(path, f"{model.name}/{component.name}: torch vs Core ML (kiln executor)"
                              + (" [synthetic weights]" if model.synthetic else ""), label, step_seconds,
                              ref_series, {n: family.plot_series(component, s)[1]
                                           for n, s in steps.items() if n != reference})
            plot_files.append(str(path))
        path = Path(plots_dir) / f"{component.name}_latency.png"
        plots.latency_plot(path, f"{model.name}/{component.name}: latency per backend",
                           {k: (v["median_ms"] if v else None) for k, v in latency.items()},
                           absent_note=next(iter(absent.values()), ""))
        plot_files.append(str(path))
    return {
        "validation": {
            "inputs": f"espeak-ng speech mixed with silence and noise, {audio.size / family.sample_rate:.1f} s "
                      f"at {family.sample_rate} Hz, streamed with state carried",
            "steps": len(steps[reference]),
            "reference_backend": reference,
            "report_only": component.validate.report_only,
            "passed": not failures,
            "report_only_backends": list(component.validate.report_only_backends),
            "failures": failures,
        },
        "parity": entries,
        "task_metrics": task,
        "latency": latency,
        "absent_backends": absent,
        "plots": plot_files,
    }
