"""Typed errors of the Core ML format layer. Each names the file and, where it applies, the place in
it (byte offset, line and column, operation), so a user can find the fault."""

from __future__ import annotations

from kiln.foundation.errors import KilnError


class ModelFormatError(KilnError):
    """A Core ML file or directory (``.mlpackage``, ``.mlmodelc``, its program) is missing or
    malformed. Names the file and, where known, the location inside it."""

    def __init__(self, message: str, path: object | None = None):
        self.path = str(path) if path is not None else None
        super().__init__(f"{path}: {message}" if path is not None else message)


class PackageError(ModelFormatError):
    """The directory is malformed: Manifest missing or inconsistent, an item missing, a path leaving
    the package or passing through a symlink, a model spec that does not parse."""


class UnsupportedModelError(PackageError):
    """A valid Core ML model that is not an ML Program (e.g. a NeuralNetwork)."""


class BlobFormatError(ModelFormatError):
    """``weight.bin`` (MIL blob storage v2) is corrupt, truncated or does not match the program.

    Names the file and the byte offset of the offending record."""

    def __init__(self, message: str, path: object, offset: int | None = None):
        self.offset = offset
        where = f" (blob record at offset {offset})" if offset is not None else ""
        super().__init__(f"{message}{where}", path)


class UnsupportedValueError(ModelFormatError):
    """A program holds something the MIL text form cannot express (an unset value kind, an unknown
    data type, a name that is not a MIL identifier). Names where it sits."""

    def __init__(self, message: str, where: str | None = None):
        self.where = where
        KilnError.__init__(self, f"{where}: {message}" if where else message)
        self.path = None


class MilSyntaxError(ModelFormatError):
    """`model.mil` text does not parse. Carries the file name, 1-based line and column."""

    def __init__(self, message: str, file: str, line: int, column: int):
        self.file = file
        self.line = line
        self.column = column
        self.reason = message
        KilnError.__init__(self, f"{file}:{line}:{column}: {message}")
        self.path = file


class CoremlDataError(ModelFormatError):
    """A `coremldata.bin` file is truncated or its header/trailer is not the expected layout."""

    def __init__(self, message: str, path: str | None = None, offset: int | None = None):
        self.offset = offset
        where = f"{path}" if path else "coremldata.bin"
        at = f" at byte 0x{offset:x}" if offset is not None else ""
        KilnError.__init__(self, f"{where}{at}: {message}")
        self.path = path
