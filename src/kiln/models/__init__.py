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
