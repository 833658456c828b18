"""Typed errors of the `.mlpackage` -> `.mlmodelc` compiler. Each names the file and, where it
applies, the place inside it (op, line and column, byte offset), so a user can find the fault."""

from __future__ import annotations

from kiln.errors import KilnError


class CompileError(KilnError):
    """Base class of every error the compiler raises on bad input."""


class PackageError(CompileError):
    """The `.mlpackage` is malformed: Manifest missing or inconsistent, an item missing, a path
    escaping the package, a model that is not an ML Program, weights that do not resolve."""

    def __init__(self, message: str, path: str | None = None):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class UnsupportedValueError(CompileError):
    """A program holds something the MIL text form cannot express (an unset value kind, an
    unknown data type, a name that is not a MIL identifier). Names where it sits."""

    def __init__(self, message: str, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class MilSyntaxError(CompileError):
    """`model.mil` text does not parse. Carries the file name, 1-based line and column."""

    def __init__(self, message: str, file: str, line: int, column: int):
        self.file = file
        self.line = line
        self.column = column
        self.reason = message
        super().__init__(f"{file}:{line}:{column}: {message}")


class CoremlDataError(CompileError):
    """A `coremldata.bin` file is truncated or its header/trailer is not the expected layout."""

    def __init__(self, message: str, path: str | None = None, offset: int | None = None):
        self.path = path
        self.offset = offset
        where = f"{path}" if path else "coremldata.bin"
        at = f" at byte 0x{offset:x}" if offset is not None else ""
        super().__init__(f"{where}{at}: {message}")


class AppleCompilerError(CompileError):
    """Apple's `coremlcompiler` is absent (not macOS / no Xcode) or failed."""
