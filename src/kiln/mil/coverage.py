"""Op coverage: which MIL op types kiln implements, per opset, against coremltools' registry."""

from __future__ import annotations

from dataclasses import dataclass

from .registry import OPSETS, implemented_op_types


@dataclass(frozen=True)
class OpsetCoverage:
    opset: str
    defined: tuple[str, ...]  # core op types coremltools defines for this opset
    implemented: tuple[str, ...]  # of those, the ones kiln implements
    missing: tuple[str, ...]
    extra: tuple[str, ...]  # implemented by kiln, not a coremltools core op (e.g. write_state)

    @property
    def ratio(self) -> float:
        return len(self.implemented) / len(self.defined) if self.defined else 1.0


def defined_op_types(opset: str) -> set[str]:
    """Core op types coremltools' ``SSAOpRegistry`` defines for ``opset`` ("iOS15".."iOS18")."""
    from coremltools.converters.mil._deployment_compatibility import AvailableTarget
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    target = getattr(AvailableTarget, opset)
    return {op_type for op_type, variants in SSAOpRegistry.core_ops.items() if target in variants}


def coverage() -> dict[str, OpsetCoverage]:
    """Per opset (iOS15..iOS18): defined vs implemented op types."""
    result = {}
    for opset in OPSETS:
        defined = defined_op_types(opset)
        implemented = implemented_op_types(opset)
        result[opset] = OpsetCoverage(
            opset=opset,
            defined=tuple(sorted(defined)),
            implemented=tuple(sorted(defined & implemented)),
            missing=tuple(sorted(defined - implemented)),
            extra=tuple(sorted(implemented - defined)),
        )
    return result
