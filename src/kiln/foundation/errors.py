"""Typed errors. Every error kiln raises on bad input derives from :class:`KilnError`, so callers
(the CLI, Snakemake scripts, the fuzz tests) can tell kiln's own diagnostics from crashes.

Subsystems define their own subclasses next to their code (e.g. ``kiln.mil.errors``); the ones
shared across subsystems live here.
"""

from __future__ import annotations

import sys

#: the exit code of every command that stopped on a kiln error (one line on stderr, no traceback)
EXIT_KILN_ERROR = 2


class KilnError(Exception):
    """Base class of every error kiln raises deliberately."""


class ConfigError(KilnError):
    """``config.yaml`` does not satisfy its schema or its cross-field rules. Names the key path."""

    def __init__(self, message: str, key: str | None = None, file: str | None = None):
        self.key = key
        self.file = file
        where = f"{file}: " if file else ""
        at = f"at '{key}': " if key else ""
        super().__init__(f"{where}{at}{message}")


class SourceError(KilnError):
    """A source checkpoint is missing, corrupt or cannot be fetched. Names the file or id."""


class ConversionError(SourceError):
    """An ONNX source graph cannot become a torch module. Names the op, its node and the file."""


class ModelError(KilnError):
    """A model module is missing, or a component is not declared by it."""


class ExportError(KilnError):
    """Tracing or converting a component failed. Names the model, component and stage."""


class ContractError(KilnError):
    """Inputs or outputs do not match a component's declared I/O contract."""


class ParityError(KilnError):
    """An output of a converted model differs from its source beyond the configured tolerance."""


class OutputError(KilnError):
    """An output path cannot be written without destroying something kiln did not make, or its
    directory is missing or not writable. Names the path."""


class InputFileError(KilnError):
    """A file given on the command line cannot be read as what the command needs. Names the file."""


def run_command(args) -> int:
    """Run a parsed subcommand (``args.func(args)``, any kiln command line: ``kiln``,
    ``python -m kiln.mil.cli``); a kiln error becomes one line on stderr and exit code 2."""
    try:
        return int(args.func(args) or 0)
    except KilnError as exc:
        print(f"kiln: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_KILN_ERROR
