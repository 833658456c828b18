"""The family registry: families are found by package name under :data:`kiln.family.FAMILIES_PREFIX`
(``kiln/models/<family>/``), imported when asked for. The layers below the families (sources,
contracts, publish) look a family up here, by name, instead of importing ``kiln.models``; the
families themselves stay cheap to list (nothing is imported to list them).
"""

from __future__ import annotations

import importlib
import pkgutil

from kiln.foundation.errors import ModelError
from kiln.family import FAMILIES_PREFIX


def _families_package():
    # imported by name (the package of the families sits above this layer)
    return importlib.import_module(FAMILIES_PREFIX[:-1])


def family_names() -> list[str]:
    """Every family package (``kiln/models/<family>/``; not ``_`` helpers, not plain modules)."""
    return sorted(m.name for m in pkgutil.iter_modules(_families_package().__path__)
                  if m.ispkg and not m.name.startswith("_"))


def _module(name: str):
    if name not in family_names():
        raise ModelError(f"unknown model family '{name}' (known: {', '.join(family_names())})")
    return importlib.import_module(FAMILIES_PREFIX + name)


def get_family(name: str):
    """Import the family package ``name`` and return its ``FAMILY``."""
    module = _module(name)
    family = getattr(module, "FAMILY", None)
    if family is None:
        if hasattr(module, "family_for"):
            raise ModelError(f"model family '{name}' is built from each model's config block: use "
                             f"kiln.models.family_of(model_config)")
        raise ModelError(f"{FAMILIES_PREFIX}{name} does not define FAMILY")
    return family


def family_of(model):
    """The :class:`~kiln.family.spec.FamilySpec` that builds ``model`` (a ModelConfig): its
    family's ``FAMILY``, or the spec ``family_for(model)`` makes from the config block."""
    module = _module(model.family)
    build = getattr(module, "family_for", None)
    return build(model) if build is not None else get_family(model.family)


def family_tasks(name: str) -> dict:
    """The task labels family ``name`` adds (its package's ``TASKS``)."""
    return dict(getattr(_module(name), "TASKS", None) or {})
