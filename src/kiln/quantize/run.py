"""Build one quantized variant of one component and score it against the float Core ML baseline."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from kiln.config import ComponentConfig, ModelConfig
from kiln.errors import KilnError
from kiln.export.convert import SPEC_VERSIONS
from kiln.fsutil import remove_path, sha256_tree, tree_size
from kiln.models.base import ModelFamily
from kiln.quantize.strategies import STRATEGIES, QuantizeContext, needs_target
from kiln.validate import backends as bk
from kiln.validate.metrics import max_abs, psnr_db, quality, finite_or_none
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


def _export_at(family, source, component: ComponentConfig, target: str, workdir: Path) -> Path:
    from kiln.export.convert import export_component

    retargeted = dataclasses.replace(component, export=dataclasses.replace(component.export,
                                                                            deployment_target=target))
    out = workdir / f"{component.name}.{target}.mlpackage"
    export_component(family, source, retargeted, out)
    return out


def compress(strategy_name: str, base: Path, family: ModelFamily, source: Any, component: ComponentConfig,
             ctx: QuantizeContext, out_package: Path) -> dict:
    """Apply the strategy and save ``out_package``; raise :class:`Skip` when it cannot apply."""
    import coremltools as ct

    from kiln.export.package import save_mlpackage

    strategy = STRATEGIES[strategy_name]
    target = needs_target(strategy_name, component.export.deployment_target)
    with tempfile.TemporaryDirectory() as tmp:
        source_package = base
        if target != component.export.deployment_target:
            log.info("  %s needs %s: re-exporting %s at %s", strategy_name, strategy.min_target,
                     component.name, target)
            source_package = _export_at(family, source, component, target, Path(tmp))
        # coremltools' package loader rewrites Manifest.json in place (new mtime), which would make
        # every job downstream of the base package look stale: load from a private copy instead
        private = Path(tmp) / "base" / source_package.name
        shutil.copytree(source_package, private)
        mlmodel = ct.models.MLModel(str(private), skip_model_load=True)
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


def score(family: ModelFamily, component: ComponentConfig, base: Path, quantized: Path,
          audio: np.ndarray, precisions=("fp32", "fp16")) -> dict:
    """Quality of the quantized package vs the float baseline (both on kiln's executor, fp32 mode,
    so only the weights differ), task agreement, and latency per available backend."""
    baseline = family.stream(component, bk.kiln_backend(base, "fp32").predict, audio)
    present, absent = coreml_backends(quantized, component, precisions)
    steps, latency = stream_backends(family, component, present, absent, audio)
    outputs = {}
    for spec in component.outputs:
        ref, out = stack(baseline, spec.name), stack(steps["kiln_fp32"], spec.name)
        outputs[spec.name] = {"quality": quality(ref, out), "psnr_db": finite_or_none(psnr_db(ref, out)),
                              "max_abs": max_abs(ref, out)}
    return {
        "outputs": outputs,
        "quality": min(o["quality"] for o in outputs.values()),
        "task_metrics": family.task_metrics(component, baseline, steps["kiln_fp32"]),
        "latency": latency,
    }


def quantize_component(family: ModelFamily, source: Any, model: ModelConfig, component: ComponentConfig,
                       strategy_name: str, base_package: Path, out_dir: Path, workers: int = 1) -> dict:
    from kiln.workflow.compile_stage import compile_component

    q = component.quantize
    ctx = QuantizeContext(weight_threshold=q["weight_threshold"], skip_ops=tuple(q["skip_ops"]),
                          workers=workers, params=dict(q["params"].get(strategy_name, {})))
    out_package = out_dir / f"{component.name}.mlpackage"
    out_bundle = out_dir / f"{component.name}.mlmodelc"
    base_bytes = tree_size(base_package)
    record = {"strategy": strategy_name, "description": STRATEGIES[strategy_name].description,
              "component": component.name, "baseline_bytes": base_bytes}
    log.info("quantizing %s/%s with %s", model.name, component.name, strategy_name)
    try:
        details = compress(strategy_name, base_package, family, source, component, ctx, out_package)
    except Skip as skip:
        log.warning("  skipped: %s", skip)
        for stale in (out_package, out_bundle):
            remove_path(stale)
        return {**record, "status": "skipped", "skip_reason": str(skip)}
    compiled = compile_component(out_package, out_bundle, model.compile,
                                 check_inputs=family.example_inputs(component, seed=1))
    size = tree_size(out_package)
    # as in the validate stage: families may derive validation inputs from the source model they
    # built the component from (Parakeet's decoder/joint inputs come from its torch pipeline)
    family.build_component(source, component)
    audio = family.validation_audio(component)
    scores = score(family, component, base_package, out_package, audio)
    log.info("  %d -> %d bytes (%.3f), quality %.5f", base_bytes, size, size / base_bytes, scores["quality"])
    return {
        **record,
        "status": "ok",
        **details,
        "package": {"path": str(out_package), "sha256": sha256_tree(out_package), "size_bytes": size},
        "bundle": compiled["bundle"],
        "compiler": compiled["compiler"],
        "size_ratio": size / base_bytes,
        **scores,
    }
