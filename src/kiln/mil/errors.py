"""Typed errors of the ML Program executor.

Every error raised deliberately by :mod:`kiln.mil` derives from :class:`MilError`, itself a
:class:`kiln.errors.KilnError`, so callers can tell a diagnosed bad model or bad input from a crash.
"""

from __future__ import annotations

from kiln.errors import ContractError, KilnError


class MilError(KilnError):
    """Base class of the executor's errors."""


class ModelFormatError(MilError):
    """A model bundle (``.mlpackage`` / ``.mlmodelc``) or its program is missing or malformed.

    Names the file and, where known, the location inside it."""

    def __init__(self, message: str, path: object | None = None):
        self.path = str(path) if path is not None else None
        super().__init__(f"{path}: {message}" if path is not None else message)


class BlobFormatError(ModelFormatError):
    """``weight.bin`` (MIL blob storage v2) is corrupt, truncated or does not match the program.

    Names the file and the byte offset of the offending record."""

    def __init__(self, message: str, path: object, offset: int | None = None):
        self.offset = offset
        where = f" (blob record at offset {offset})" if offset is not None else ""
        super().__init__(f"{message}{where}", path)


class UnsupportedModelError(MilError):
    """The model is valid Core ML but not something the executor runs (e.g. a NeuralNetwork)."""


class UnsupportedOpError(MilError):
    """An op of the program has no implementation in kiln for its opset.

    Raised when the execution plan is built, before anything runs."""

    def __init__(self, op_type: str, opset: str, node: str):
        self.op_type = op_type
        self.opset = opset
        self.node = node
        super().__init__(
            f"op '{op_type}' (opset {opset}) producing '{node}' is not implemented by kiln.mil; "
            f"see `kiln ops --coverage`"
        )


class OpExecutionError(MilError):
    """An op failed while being evaluated (bad shapes, out-of-range indices, invalid parameters).

    Names the op type, the opset and the node (its first output)."""

    def __init__(self, op_type: str, opset: str, node: str, reason: str):
        self.op_type = op_type
        self.opset = opset
        self.node = node
        self.reason = reason
        super().__init__(f"op '{op_type}' (opset {opset}) producing '{node}' failed: {reason}")


class InputContractError(ContractError, MilError):
    """Inputs passed to :meth:`ExecutionPlan.run` do not match the program's input contract.

    The message lists the expected inputs (name, dtype, shape)."""


class PrecisionError(MilError):
    """An unknown precision mode was requested (valid: ``fp32``, ``fp16``)."""
