"""Model families: one module per family (``kiln/models/<family>.py``), each exposing ``FAMILY``, a
:class:`kiln.models.spec.FamilySpec` that reads as the list of its components (traceable wrappers,
validation feeds, state pairs, metrics). Adding a model means adding one such module and one config
block. Modules whose names start with ``_`` are shared helpers, not families.

Families are looked up by module name, so this package stays cheap to import (no torch here).
"""

from __future__ import annotations

import importlib
import pkgutil

from kiln.errors import ModelError


def family_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_") and m.name != "spec")


def get_family(name: str):
    """Import ``kiln.models.<name>`` and return its ``FAMILY``."""
    if name not in family_names():
        raise ModelError(f"unknown model family '{name}' (known: {', '.join(family_names())})")
    module = importlib.import_module(f"kiln.models.{name}")
    family = getattr(module, "FAMILY", None)
    if family is None:
        raise ModelError(f"kiln.models.{name} does not define FAMILY")
    return family


def check_models(config) -> None:
    """Check every configured model against its family's component specs, before any job runs:
    each component is one the family builds, its contract names the inputs and outputs the spec
    declares (same count, same order), and a random source names a family that can make one.
    Raises :class:`kiln.errors.ConfigError` naming the key."""
    from kiln.errors import ConfigError

    for name, model in config.models.items():
        family = get_family(model.family)
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
