"""Targets and stamps of the workflow, derived from the validated config (used by the Snakefile)."""

from __future__ import annotations

from pathlib import Path

from kiln.config import (Config, compile_settings, export_settings, quantize_settings, source_settings,
                         validate_settings)
from kiln.workflow.stamps import STAMP_ROOT, Stamp


def source_record(config: Config, model: str) -> Path:
    return Path(config.results_dir) / model / "source.json"


def export_record(config: Config, model: str, component: str) -> Path:
    return Path(config.results_dir) / model / "export" / f"{component}.json"


def parity_record(config: Config, model: str, component: str) -> Path:
    return Path(config.results_dir) / model / "parity" / f"{component}.json"


def compile_record(config: Config, model: str, component: str) -> Path:
    return Path(config.results_dir) / model / "compile" / f"{component}.json"


def bundle_path(config: Config, model: str, component: str) -> Path:
    return Path(config.results_dir) / model / f"{component}.mlmodelc"


def quantize_record(config: Config, model: str, strategy: str, component: str) -> Path:
    return Path(config.results_dir) / model / "quantized" / strategy / f"{component}.json"


def quantization_summary(config: Config, model: str) -> Path:
    return Path(config.results_dir) / model / "quantization_summary.json"


def quantize_jobs(config: Config, model: str) -> list[tuple[str, str]]:
    """(strategy, component) pairs configured for ``model``."""
    return [(s, c) for c, comp in config.models[model].components.items() for s in comp.quantize["strategies"]]


def metadata_path(config: Config, model: str) -> Path:
    return Path(config.results_dir) / model / "metadata.json"


def package_path(config: Config, model: str, component: str) -> Path:
    return Path(config.results_dir) / model / f"{component}.mlpackage"


def checkpoint_dir(config: Config, model: str) -> Path:
    """Where fetched or generated checkpoint files live (versioned by DVC with the results)."""
    return Path(config.results_dir) / model / "checkpoint"


def stamps(config: Config) -> list[Stamp]:
    out = []
    for name, model in config.models.items():
        out.append(Stamp(name, "source", source_settings(model), source_record(config, name)))
        for cname, component in model.components.items():
            out.append(Stamp(name, f"export/{cname}", export_settings(model, component),
                             export_record(config, name, cname)))
            out.append(Stamp(name, f"compile/{cname}", compile_settings(model, component),
                             compile_record(config, name, cname)))
            for strategy in component.quantize["strategies"]:
                out.append(Stamp(name, f"quantize/{strategy}/{cname}",
                                 quantize_settings(model, component, strategy),
                                 quantize_record(config, name, strategy, cname)))
            out.append(Stamp(name, f"parity/{cname}", validate_settings(model, component),
                             parity_record(config, name, cname)))
    return out


def ledger_path(config: Config) -> Path:
    """The content ledger (kiln.workflow.ledger), versioned by DVC with the results."""
    return Path(config.results_dir) / ".kiln-ledger.json"


def ledger_roots(config: Config) -> list[str]:
    """Everything Snakemake's mtime comparisons involve: results (outputs, checkpoints), settings
    stamps, the kiln source (code inputs) and the job scripts (Snakemake's script trigger)."""
    return [config.results_dir, str(STAMP_ROOT), "src/kiln", "scripts"]


def end_to_end_record(config: Config, model: str) -> Path:
    return Path(config.results_dir) / model / "end_to_end.json"


def export_targets(config: Config, model: str | None = None) -> list[str]:
    names = [model] if model else config.enabled_models
    return [str(package_path(config, m, c)) for m in names for c in config.models[m].components]


def model_targets(config: Config, model: str) -> list[str]:
    """Everything the workflow builds for ``model``: metadata.json (export, compile, validate) and
    the quantization sweep."""
    return [str(metadata_path(config, model)), str(quantization_summary(config, model))]


def quantize_targets(config: Config) -> list[str]:
    return [str(quantization_summary(config, m)) for m in config.enabled_models]


def compile_targets(config: Config) -> list[str]:
    return [str(bundle_path(config, m, c)) for m in config.enabled_models for c in config.models[m].components]


def validate_targets(config: Config) -> list[str]:
    return [str(metadata_path(config, m)) for m in config.enabled_models]
