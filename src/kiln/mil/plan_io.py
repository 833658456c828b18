"""What an execution plan takes and gives: :class:`IOSpec` (one input or output, its name and MIL
tensor type) and :class:`Prediction` (the outputs of one run)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .values import TensorType


@dataclass(frozen=True)
class IOSpec:
    """One input or output of a plan: its name and MIL tensor type (None for a non-tensor output,
    e.g. a classifier's probability dictionary)."""

    name: str
    type: TensorType | None

    @property
    def dtype(self) -> str:
        return self.type.dtype.name

    @property
    def shape(self) -> tuple[int | None, ...] | None:
        return self.type.shape

    @property
    def numpy_dtype(self) -> np.dtype:
        return self.type.dtype.user

    def describe(self) -> str:
        return f"{self.name}: {self.type.describe() if self.type is not None else 'non-tensor'}"


class Prediction(dict):
    """Outputs of one :meth:`ExecutionPlan.run`, by name, plus the precision mode that made them
    and, for stateful programs (iOS18 states), the final value of every state."""

    def __init__(self, values: Mapping[str, np.ndarray], precision: str):
        super().__init__(values)
        self.precision = precision
        self.states: dict[str, np.ndarray] = {}
