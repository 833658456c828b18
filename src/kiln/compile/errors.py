"""Typed errors of the `.mlpackage` -> `.mlmodelc` compiler. Malformed input raises the format
layer's errors (`kiln.coreml.errors`, re-exported here); each names the file and, where it applies,
the place inside it (op, line and column, byte offset), so a user can find the fault."""

from __future__ import annotations

from kiln.coreml.errors import (  # noqa: F401  (the format errors the compiler raises)
    CoremlDataError,
    MilSyntaxError,
    ModelFormatError,
    PackageError,
    UnsupportedValueError,
)
from kiln.foundation.errors import KilnError


class CompileError(KilnError):
    """Base class of every error the compiler raises on bad input."""


class AppleCompilerError(CompileError):
    """Apple's `coremlcompiler` is absent (not macOS / no Xcode) or failed."""
