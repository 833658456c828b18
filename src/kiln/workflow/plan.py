"""Targets and stamps of the workflow, derived from the validated config (used by the Snakefile).
Where each artifact lives is :mod:`kiln.layout`."""

from __future__ import annotations

import functools

import json
from pathlib import Path

from kiln.config import (Config, compile_settings, export_settings, prepare_settings, quantize_settings,
                         source_settings, validate_settings)
from kiln import layout
from kiln.workflow.stamps import STAMP_ROOT, Stamp


def quantize_base(config: Config, model: str, strategy: str, component: str) -> Path:
    """The package a strategy compresses: the float export, or its iOS18 re-export when needed."""
    from kiln.quantize.strategies import needs_target

    comp = config.models[model].components[component]
    if needs_target(strategy, comp.export.deployment_target) != comp.export.deployment_target:
        return layout.IOS18_PACKAGE.path(config, model=model, component=component)
    return layout.PACKAGE.path(config, model=model, component=component)


def quantize_jobs(config: Config, model: str) -> list[tuple[str, str]]:
    """(strategy, component) pairs configured for ``model``."""
    return [(s, c) for c, comp in config.models[model].components.items() for s in comp.quantize["strategies"]]


def needs_ios18(config: Config, model: str, component: str) -> bool:
    """Whether a configured strategy of the component compresses its iOS18 re-export."""
    strategies = config.models[model].components[component].quantize["strategies"]
    return any(quantize_base(config, model, s, component) == layout.IOS18_PACKAGE.path(config, model=model, component=component)
               for s in strategies)


def ios18_component(component):
    import dataclasses

    return dataclasses.replace(component, export=dataclasses.replace(component.export, deployment_target="iOS18"))


def stamps(config: Config) -> list[Stamp]:
    out = []
    for name, model in config.models.items():
        out.append(Stamp(name, "source", source_settings(model), layout.SOURCE.path(config, model=name)))
        out.append(Stamp(name, "prepare", prepare_settings(model), layout.FACTS.path(config, model=name)))
        for cname, component in model.components.items():
            # without the contract: the prepare job resolves it (the export reads it from its inputs)
            out.append(Stamp(name, f"export/{cname}", export_settings(model, component, contract=False),
                             layout.EXPORT_RECORD.path(config, model=name, component=cname)))
            if needs_ios18(config, name, cname):
                out.append(Stamp(name, f"export_ios18/{cname}", export_settings(model, ios18_component(component), contract=False),
                                 layout.IOS18_RECORD.path(config, model=name, component=cname)))
            out.append(Stamp(name, f"compile/{cname}", compile_settings(model, component),
                             layout.COMPILE_RECORD.path(config, model=name, component=cname)))
            for strategy in component.quantize["strategies"]:
                out.append(Stamp(name, f"quantize/{strategy}/{cname}",
                                 quantize_settings(model, component, strategy),
                                 layout.QUANTIZE_RECORD.path(config, model=name, strategy=strategy, component=cname)))
            out.append(Stamp(name, f"parity/{cname}", validate_settings(model, component),
                             layout.PARITY_RECORD.path(config, model=name, component=cname)))
    return out


def code_stages(config: Config) -> list[tuple[str, str | None]]:
    """Every ``(stage, family)`` whose code stamp a job of this config depends on
    (:func:`kiln.workflow.codedeps.sync_code_stamps`)."""
    out: list[tuple[str, str | None]] = [("export", None), ("compile", None)]
    for model in config.models.values():
        if model.source.get("kind") == "random":
            out.append(("fetch_random", model.family))
        out.extend((stage, model.family) for stage in ("prepare", "reference", "validate", "quantize",
                                                        "quantization_summary", "contract"))
    return out


def ledger_roots(config: Config) -> list[str]:
    """Everything Snakemake's mtime comparisons involve: results (outputs, checkpoints), settings
    stamps, the kiln source (code inputs), the job scripts (Snakemake's script trigger) and the
    consumer contracts (the contract job's input)."""
    return [config.results_dir, str(STAMP_ROOT), "src/kiln", "scripts", "contracts"]


def export_targets(config: Config, model: str | None = None) -> list[str]:
    names = [model] if model else config.enabled_models
    return [str(layout.PACKAGE.path(config, model=m, component=c)) for m in names for c in config.models[m].components]


def model_targets(config: Config, model: str) -> list[str]:
    """Everything the workflow builds for ``model``: every component's .mlpackage and .mlmodelc (the
    deliverables, named so that one deleted, e.g. by a failed re-export, is built again although its
    records downstream are up to date), metadata.json (export, compile, validate), the quantization
    sweep with its plots, and the check against its consumer's contract (where one exists)."""
    deliverables = [str(artifact.path(config, model=model, component=c))
                    for c in config.models[model].components for artifact in (layout.PACKAGE, layout.BUNDLE)]
    targets = [*deliverables, str(layout.METADATA.path(config, model=model)),
               str(layout.QUANTIZATION_SUMMARY.path(config, model=model)), *quantization_plots(config, model)]
    if contract_file(config, model).is_file():
        targets.append(str(layout.CONTRACT_REPORT.path(config, model=model)))
    return targets


def quantization_plots(config: Config, model: str) -> list[str]:
    """The size-vs-quality plot of every component with a quantization strategy."""
    components = sorted({c for _, c in quantize_jobs(config, model)})
    return [str(layout.QUANTIZATION_PLOT.path(config, model=model, component=c))
            for c in components]


def contract_file(config: Config, model: str) -> Path:
    """The consumer contract of the model's family (kiln.distribution.contracts)."""
    from kiln.distribution.contracts import contract_path

    return contract_path(config.models[model].family)


#: the component names of contract texts parsed before, by the text's sha256 (the rules ask at every
#: start; the bounded YAML reader is pure Python)
CONTRACT_NAMES_CACHE = Path(".kiln") / "cache" / "contract_components.json"


def _contract_components(path: Path) -> frozenset[str]:
    """The component names a consumer contract file lists (none when it cannot be read: the contract
    job reports the unreadable file by name). Remembered per (size, mtime) in this process: the rules
    ask twice per model."""
    try:
        info = path.stat()
    except OSError:
        return frozenset()
    return _contract_components_of(str(path), info.st_size, info.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _contract_components_of(path: str, size: int, mtime_ns: int) -> frozenset[str]:
    import hashlib

    from kiln.foundation import yamlio
    from kiln.foundation.fsutil import write_json

    try:
        text = yamlio.read_text(path)
    except yamlio.YamlFileError:
        return frozenset()
    digest = hashlib.sha256(text.encode()).hexdigest()
    try:
        known = json.loads(CONTRACT_NAMES_CACHE.read_text())
        known = {k: v for k, v in known.items() if isinstance(v, list)}
    except (OSError, ValueError, AttributeError):
        known = {}
    if digest in known:
        return frozenset(known[digest])
    try:
        names = frozenset((yamlio.parse(path, text) or {}).get("components") or {})
    except (yamlio.YamlFileError, AttributeError, TypeError):
        return frozenset()
    known[digest] = sorted(names)
    write_json(CONTRACT_NAMES_CACHE, dict(list(known.items())[-64:]))
    return names


def contract_artifacts(config: Config, model: str) -> dict[str, dict[str, str]]:
    """The packages and bundles the contract check reads: the model's components the contract names."""
    named = _contract_components(contract_file(config, model))
    names = [c for c in config.models[model].components if c in named]
    return {"packages": {c: str(layout.PACKAGE.path(config, model=model, component=c)) for c in names},
            "bundles": {c: str(layout.BUNDLE.path(config, model=model, component=c)) for c in names}}


def quantize_targets(config: Config) -> list[str]:
    return [t for m in config.enabled_models for t in (str(layout.QUANTIZATION_SUMMARY.path(config, model=m)),
                                                       *quantization_plots(config, m))]


def compile_targets(config: Config) -> list[str]:
    return [str(layout.BUNDLE.path(config, model=m, component=c)) for m in config.enabled_models for c in config.models[m].components]


def validate_targets(config: Config) -> list[str]:
    return [str(layout.METADATA.path(config, model=m)) for m in config.enabled_models]


def check_models(config: Config, cache: Path = Path(".kiln") / "models_checked.json") -> bool:
    """:func:`kiln.models.check_models` before any job is planned. It imports the family modules
    (torch), so a passing check is remembered by the digest of the config and of the family code:
    an unchanged workflow starts as fast as before. Returns whether the check ran."""
    import hashlib

    import kiln.models
    from kiln.config import canonical_json

    digest = hashlib.sha256(canonical_json(config.raw).encode())
    import kiln.tasks

    # the family modules and the task registry (a label dropped from it must fail the next start)
    for module in [*sorted(Path(kiln.models.__path__[0]).glob("*.py")), Path(kiln.tasks.__file__)]:
        digest.update(module.name.encode() + b"\0" + module.read_bytes())
    key = digest.hexdigest()
    try:
        if json.loads(cache.read_text()).get("sha256") == key:
            return False
    except (OSError, ValueError, AttributeError):
        pass
    kiln.models.check_models(config)
    from kiln.foundation.fsutil import write_json

    write_json(cache, {"sha256": key})
    return True
