"""Model families: one package per family (``kiln/models/<family>/``) whose ``__init__`` exposes
``FAMILY``, a :class:`kiln.family.spec.FamilySpec` that reads as the list of its components; the
package's ``build`` module builds the network (load, facts, wrappers), its ``judge`` module judges it
(feeds, metrics, plots, task), an optional ``checkpoint`` module builds random-initialised
checkpoints (:data:`kiln.family.PARTS`: the workflow's code stamps follow that split). Adding a
model means adding one such package and one config block -- or, for a plain model (one network, a
fixed contract), only a config block of family ``plain``: that package exposes
``family_for(model_config)`` instead of ``FAMILY``, a spec built from the block (:func:`family_of`
serves both). Modules whose names start with ``_`` and plain modules are shared helpers, not
families. A family may add task labels with a ``TASKS`` mapping (label -> description).

Families are looked up by package name, so this package stays cheap to import (no torch here).
"""

from __future__ import annotations

import importlib
import pkgutil

from kiln.errors import ModelError


def family_names() -> list[str]:
    """Every family package (``kiln/models/<family>/``; not ``_`` helpers, not plain modules)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg and not m.name.startswith("_"))


def _module(name: str):
    if name not in family_names():
        raise ModelError(f"unknown model family '{name}' (known: {', '.join(family_names())})")
    return importlib.import_module(f"kiln.models.{name}")


def get_family(name: str):
    """Import ``kiln.models.<name>`` and return its ``FAMILY``."""
    module = _module(name)
    family = getattr(module, "FAMILY", None)
    if family is None:
        if hasattr(module, "family_for"):
            raise ModelError(f"model family '{name}' is built from each model's config block: use "
                             f"kiln.models.family_of(model_config)")
        raise ModelError(f"kiln.models.{name} does not define FAMILY")
    return family


def family_of(model):
    """The :class:`~kiln.family.spec.FamilySpec` that builds ``model`` (a ModelConfig): its
    family's ``FAMILY``, or the spec ``family_for(model)`` makes from the config block."""
    module = _module(model.family)
    build = getattr(module, "family_for", None)
    return build(model) if build is not None else get_family(model.family)


def family_tasks(name: str) -> dict:
    """The task labels family ``name`` adds (its module's ``TASKS``)."""
    return dict(getattr(_module(name), "TASKS", None) or {})


def check_models(config) -> None:
    """Check every configured model against its family's component specs, before any job runs:
    each component is one the family builds, its contract names the inputs and outputs the spec
    declares (same count, same order), and a random source names a family that can make one.
    Raises :class:`kiln.errors.ConfigError` naming the key."""
    from kiln.errors import ConfigError
    from kiln.tasks import check_task

    for name, model in config.models.items():   # labels first: cheap, and what a user edits most
        check_task(name, model.task, config_tasks=config.tasks, family_tasks=family_tasks(model.family),
                   file=config.path)
    for name, model in config.models.items():
        try:
            family = family_of(model)
        except ModelError as exc:
            raise ConfigError(str(exc), key=f"models.{name}.network", file=config.path) from None
        if model.source.get("kind") == "random" and family.build_random is None:
            raise ConfigError(f"family '{model.family}' cannot build a random-initialised model",
                              key=f"models.{name}.source.kind", file=config.path)
        for cname, component in model.components.items():
            if cname not in family.component_names:
                raise ConfigError(f"the {model.family} family builds no component '{cname}' (it builds: "
                                  f"{', '.join(family.component_names)})",
                                  key=f"models.{name}.components.{cname}", file=config.path)
            problem = family.contract_problem(component)
            if problem:
                raise ConfigError(problem[1], key=problem[0], file=config.path)
