"""Typed errors of the ML Program executor.

Errors about the model's files (:class:`ModelFormatError`, :class:`BlobFormatError`, ...) come from
the format layer :mod:`kiln.coreml.errors`; errors of executing derive from :class:`MilError`. Both
are :class:`kiln.foundation.errors.KilnError`, so callers can tell a diagnosed bad model or bad input from a
crash.
"""

from __future__ import annotations

from kiln.coreml.errors import (  # noqa: F401  (file-format errors, raised by the format layer too)
    BlobFormatError,
    ModelFormatError,
    UnsupportedModelError,
)
from kiln.foundation.errors import ContractError, KilnError


class MilError(KilnError):
    """Base class of the executor's errors."""


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
