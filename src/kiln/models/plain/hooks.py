"""Family ``plain``, the user's own code a config block names as ``"package.module:callable"``
(a network factory, a feed function, a metric): imported when first called, failures named with
the config key. A module of no part: each part that names a hook imports it."""

from __future__ import annotations

import importlib
from typing import Any, Callable

from kiln.foundation.errors import ModelError


def attribute(obj: Any, dotted: str, what: str) -> Any:
    """``obj.a.b`` for ``dotted`` ``"a.b"``; a missing part is a ModelError naming ``what``."""
    for part in dotted.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ModelError(f"{what}: has no attribute '{part}' (of '{dotted}')") from None
    return obj


def user_callable(spec: str, where: str) -> Callable[..., Any]:
    """The callable ``"package.module:name"`` names (``where``: the config key, for errors)."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"{where}: cannot import '{module_name}' ({exc}); install the package that "
                         f"provides it (docs/adding-a-model.md: a model's own dependency)") from None
    found = attribute(module, attr, f"{where}: module '{module_name}'")
    if not callable(found):
        raise ModelError(f"{where}: '{spec}' is a {type(found).__name__}, not a callable")
    return found
