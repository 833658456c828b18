"""Build one quantized variant of one component and score it against the float Core ML baseline.

The job runs no judging code of the model's family (:data:`kiln.family.PARTS`): it records the
baseline's and the variant's outputs on the validation inputs (:func:`write_steps`), and the
quantization summary computes the family's task metrics from them (:func:`task_scores`), so an edit
to a family's metric re-runs the summary, not every quantize job."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from kiln.config import ComponentConfig, ModelConfig
from kiln.foundation.errors import KilnError
from kiln.integrity.digests import cached_digest
from kiln.foundation.fsutil import remove_path, tree_size
from kiln.family.spec import ComponentSpec, stream
from kiln.quantize.strategies import STRATEGIES, QuantizeContext, floored_scales, needs_target
from kiln.validate import backends as bk
from kiln.validate.metrics import (agreement, finite_or_none, finite_tree, max_abs, non_finite_problem,
                                   normalized_error, psnr_db, quality)
from kiln.validate.kinds import kind_metrics, kind_score
from kiln.validate.reference import Reference, ReferenceError, _stack, read_npz, write_npz
from kiln.validate.run import coreml_backends, stack, stream_backends

log = logging.getLogger("kiln.quantize")


class QuantizeError(KilnError):
    """A quantized package failed a sanity check (missing constexpr ops, did not shrink, wrong spec)."""


class Skip(Exception):
    """The strategy cannot apply to this component; recorded by name in the summary."""


def program_op_types(spec) -> set[str]:
    types: set[str] = set()

    def walk(block):
        for op in block.operations:
            types.add(op.type)
            for nested in op.blocks:
                walk(nested)

    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            walk(block)
    return types


def weight_bytes(package: Path) -> int:
    weights = Path(package) / "Data" / "com.apple.CoreML" / "weights"
    return tree_size(weights) if weights.exists() else 0


def compress(strategy_name: str, base: Path, component: ComponentConfig, ctx: QuantizeContext,
             out_package: Path) -> dict:
    """Apply the strategy to ``base`` (the float package, re-exported at iOS18 by its own rule when
    the strategy needs it) and save ``out_package``; raise :class:`Skip` when it cannot apply."""
    import coremltools as ct

    from kiln.export.package import save_mlpackage
    from kiln.export.passes import validation_per_pipeline

    strategy = STRATEGIES[strategy_name]
    target = needs_target(strategy_name, component.export.deployment_target)
    with tempfile.TemporaryDirectory() as tmp:
        source_package = base
        # coremltools' package loader rewrites Manifest.json in place (new mtime), which would make
        # every job downstream of the base package look stale: load from a private copy instead
        private = Path(tmp) / "base" / source_package.name
        shutil.copytree(source_package, private)
        mlmodel = ct.models.MLModel(str(private), skip_model_load=True)
        # no NaN from a constant (zero-range) weight slice; one program validation per pass pipeline
        with floored_scales(), validation_per_pipeline():
            compressed = strategy.apply(mlmodel, ctx)
        spec = compressed.get_spec()
        found = program_op_types(spec)
        constexpr = sorted(t for t in found if t.startswith("constexpr_"))
        if not constexpr:
            raise Skip(f"no weight has at least weight_threshold={ctx.weight_threshold} elements "
                       f"(or every weight-bearing op is in skip_ops {list(ctx.skip_ops)})")
        if not any(op in found for op in strategy.expected_ops):
            raise QuantizeError(f"{strategy_name}: expected one of {list(strategy.expected_ops)} in the "
                                f"compressed program, found {constexpr}")
        from kiln.export.convert import SPEC_VERSIONS   # imports torch: only the quantize job needs it

        expected_spec = SPEC_VERSIONS[target]
        if spec.specificationVersion != expected_spec:
            raise QuantizeError(f"{strategy_name}: spec version {spec.specificationVersion}, expected "
                                f"{expected_spec} ({target})")
        compressed.user_defined_metadata["kiln.quantization"] = strategy_name
        save_mlpackage(compressed, out_package)
        base_weights = weight_bytes(source_package)
    quantized_weights = weight_bytes(out_package)
    if quantized_weights >= base_weights:
        remove_path(out_package)
        raise QuantizeError(f"{strategy_name}: weights did not shrink ({quantized_weights} >= "
                            f"{base_weights} bytes)")
    return {"deployment_target": target, "specification_version": spec.specificationVersion,
            "constexpr_ops": constexpr}


#: the executor modes a variant is run in: fp32 only, the baseline's mode, so only the weights differ.
#: (Its fp16-mode run gave nothing but the emulator's latency, which says nothing of a device, and was
#: a third of a full-size Kokoro quantize job: 61 of 180 s for kokoro_15s.)
SCORED_PRECISIONS = ("fp32",)


def score(spec: ComponentSpec, component: ComponentConfig, facts: Mapping[str, Any], reference: Reference,
          base: Path, quantized: Path, precisions=SCORED_PRECISIONS, *, program: Path | None = None,
          compressed_from: Path | None = None) -> dict:
    """Quality of the quantized package vs the float baseline (both on kiln's executor, fp32 mode,
    so only the weights differ) over the reference feeds, task agreement, latency per backend
    (kiln's executor in ``precisions``, Apple's runtime per compute unit where present).
    With the component's traced ``program`` and the package the variant was ``compressed_from``:
    also kiln's execution vs torch running the variant's dequantized weights
    (:mod:`kiln.quantize.dequantized`), so a low score is shown to be the quantization's."""
    started = time.perf_counter()
    baseline = stream(bk.kiln_backend(base, "fp32").predict, spec, reference.feeds, reference.initial, component)
    log.info("  %-28s %4d steps of the float package (%.1f s)", "baseline kiln_fp32", len(baseline),
             time.perf_counter() - started)
    present, absent = coreml_backends(quantized, component, precisions)
    steps, latency = stream_backends(spec, component, present, absent, reference)
    outputs = {}
    for out in component.outputs:
        ref, got = stack(baseline, out.name), stack(steps["kiln_fp32"], out.name)
        outputs[out.name] = {"quality": quality(ref, got),
                             "normalized_error": finite_or_none(normalized_error(ref, got)),
                             "psnr_db": finite_or_none(psnr_db(ref, got)),
                             "max_abs": finite_or_none(max_abs(ref, got))}
        problem = non_finite_problem(got)   # e.g. a palettized log-mel filterbank: scored 0, not a crash
        if problem:
            outputs[out.name]["problem"] = problem
        if out.dtype == "int32":   # ids and durations: the L2 of id differences means nothing
            outputs[out.name]["agreement"] = agreement(ref, got)
        if out.kind is not None:   # a declared kind scores the output its own way (kiln.validate.kinds)
            outputs[out.name].update({"kind": out.kind, "generic_quality": outputs[out.name]["quality"],
                                      "quality": kind_score(out.kind, ref, got),
                                      "by_kind": finite_tree(kind_metrics(out.kind, ref, got))})
    # quality is the worst graded output's: float outputs without a kind by 1 - normalised error,
    # outputs with a kind by its score; integer outputs without a kind are judged by their agreement
    graded = [o for spec, o in zip(component.outputs, outputs.values())
              if spec.dtype != "int32" or spec.kind is not None] or list(outputs.values())
    worst = min(graded, key=lambda o: o["quality"])
    checked = {}
    if program is not None:
        import gc

        from kiln.quantize.dequantized import check, describe

        del present   # the variant's execution plans: their weights are freed before torch loads its own
        gc.collect()

        checked["dequantized_torch"] = check(spec, component, reference, Path(program),
                                             Path(compressed_from or base), quantized, steps["kiln_fp32"])
        log.info("  kiln vs torch on the dequantized weights: %s", describe(checked["dequantized_torch"]))
    return {
        **checked,
        "outputs": outputs,
        "quality": worst["quality"],
        "normalized_error": worst["normalized_error"],
        "latency": latency,
    }, {"baseline": baseline, "variant": steps["kiln_fp32"]}


#: the steps file beside a variant's record: the float baseline's and the variant's outputs per step
STEPS_SUFFIX = ".steps.npz"


def write_steps(path: Path, steps: Mapping[str, list]) -> dict:
    """The baseline's and the variant's outputs per step (kiln's executor, fp32 mode) at ``path``,
    written atomically; returns its record entry (path, sha256)."""
    arrays = {}
    for kind, outputs in steps.items():
        arrays.update({f"{kind}.{k}": v for k, v in _stack(outputs, sorted(outputs[0]), str(path)).items()})
    write_npz(path, arrays)
    return {"path": str(path), "sha256": cached_digest(path)}


def read_steps(path: str | Path) -> dict[str, list[dict]]:
    """``{"baseline": steps, "variant": steps}`` from a steps file (:func:`write_steps`)."""
    groups: dict[str, dict] = {"baseline": {}, "variant": {}}
    for key, value in read_npz(path).items():
        kind, _, name = key.partition(".")
        if kind not in groups:
            raise ReferenceError(f"{path}: unexpected entry '{key}'; not a kiln steps file")
        groups[kind][name] = value
    counts = {len(v) for group in groups.values() for v in group.values()}
    if len(counts) != 1:
        raise ReferenceError(f"{path}: entries disagree on the number of steps ({sorted(counts)})")
    n = counts.pop()
    return {kind: [{k: v[i] for k, v in group.items()} for i in range(n)] for kind, group in groups.items()}


def task_scores(spec: ComponentSpec, steps: Mapping[str, list], facts: Mapping[str, Any]) -> dict:
    """The family's task metrics of a variant against the baseline (``task_metrics``) and, when the
    component ranks its variants by one, ``task_score`` (what :func:`kiln.quantize.summary.rank`
    ranks by)."""
    task_metrics = finite_tree(spec.task_metrics(steps["baseline"], steps["variant"], facts))
    out = {"task_metrics": task_metrics}
    if spec.rank_by is not None and isinstance(task_metrics.get(spec.rank_by), (int, float)):
        out["task_score"] = {"metric": spec.rank_by, "value": float(task_metrics[spec.rank_by])}
    return out


def quantize_component(spec: ComponentSpec, model: ModelConfig, component: ComponentConfig,
                       facts: Mapping[str, Any], reference: Reference, strategy_name: str, base_package: Path,
                       float_package: Path, out_dir: Path, workers: int = 1, program: Path | None = None) -> dict:
    """Compress ``base_package`` with ``strategy_name``, compile the variant and score it against
    ``float_package`` (the component's float export) on the reference inputs; with the component's
    traced ``program``, check kiln's execution of the variant against torch on its dequantized weights."""
    from kiln.compile.stage import compile_component

    q = component.quantize
    ctx = QuantizeContext(weight_threshold=q["weight_threshold"], skip_ops=tuple(q["skip_ops"]),
                          workers=workers, params=dict(q["params"].get(strategy_name, {})))
    out_package = out_dir / f"{component.name}.mlpackage"
    out_bundle = out_dir / f"{component.name}.mlmodelc"
    base_bytes = tree_size(float_package)
    record = {"strategy": strategy_name, "description": STRATEGIES[strategy_name].description,
              "component": component.name, "baseline_bytes": base_bytes}
    log.info("quantizing %s/%s with %s", model.name, component.name, strategy_name)
    try:
        details = compress(strategy_name, base_package, component, ctx, out_package)
    except Skip as skip:
        log.warning("  skipped: %s", skip)
        for stale in (out_package, out_bundle, out_dir / f"{component.name}{STEPS_SUFFIX}"):
            remove_path(stale)
        return {**record, "status": "skipped", "skip_reason": str(skip)}
    compiled = compile_component(out_package, out_bundle, model.compile, check_inputs=reference.first_inputs())
    size = tree_size(out_package)
    scores, steps = score(spec, component, facts, reference, float_package, out_package, program=program,
                          compressed_from=base_package)
    log.info("  %d -> %d bytes (%.3f), quality %.5f", base_bytes, size, size / base_bytes, scores["quality"])
    return {
        **record,
        "status": "ok",
        **details,
        "package": {"path": str(out_package), "sha256": cached_digest(out_package), "size_bytes": size},
        "bundle": compiled["bundle"],
        "compiler": compiled["compiler"],
        "size_ratio": size / base_bytes,
        **scores,
        "steps_file": write_steps(out_dir / f"{component.name}{STEPS_SUFFIX}", steps),
    }
