"""Targets and stamps of the workflow, derived from the validated config (used by the Snakefile)."""

from __future__ import annotations

from pathlib import Path

from kiln.config import Config, export_settings, source_settings
from kiln.workflow.stamps import Stamp


def source_record(config: Config, model: str) -> Path:
    return Path(config.results_dir) / model / "source.json"


def export_record(config: Config, model: str, component: str) -> Path:
    return Path(config.results_dir) / model / "export" / f"{component}.json"


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
    return out


def adopt_roots(config: Config) -> dict[str, list[Path]]:
    """What ``dvc pull`` restores per model (see dvc.yaml): its results folder, checkpoints included."""
    return {name: [Path(config.results_dir) / name] for name in config.models}


def export_targets(config: Config, model: str | None = None) -> list[str]:
    names = [model] if model else list(config.models)
    return [str(package_path(config, m, c)) for m in names for c in config.models[m].components]


def model_targets(config: Config, model: str) -> list[str]:
    """Everything the workflow builds for ``model`` (grows as stages are added)."""
    return export_targets(config, model)
