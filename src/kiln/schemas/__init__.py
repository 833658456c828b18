"""kiln's JSON schemas (config.yaml, metadata.json, quantization_summary.json) and one validator."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

SCHEMA_DIR = Path(__file__).parent


@cache
def load(name: str) -> dict:
    """The schema ``<name>.schema.json`` of this folder."""
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())


def check(document, name: str, error: type[Exception], where: str) -> None:
    """Raise ``error`` naming ``where`` and the first failing path when ``document`` does not satisfy
    the schema ``name``."""
    import jsonschema   # here, not at import: the Snakefile's start-up reads schemas without validating

    errors = sorted(jsonschema.Draft202012Validator(load(name)).iter_errors(document),
                    key=lambda e: list(e.absolute_path))
    if errors:
        path = ".".join(str(p) for p in errors[0].absolute_path) or "<root>"
        raise error(f"{where}: at '{path}': {errors[0].message} ({len(errors)} problem(s))")
