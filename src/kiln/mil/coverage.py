"""Op coverage: which MIL op types kiln implements, per opset, against coremltools' registry, and
which of them coremltools' own op test suite executed on kiln (``conformance_coverage.json``, written
by ``make conformance-slice`` from the run of the fast conformance slice, never by hand)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .registry import OPSETS, implemented_op_types


@dataclass(frozen=True)
class OpsetCoverage:
    opset: str
    defined: tuple[str, ...]  # core op types coremltools defines for this opset
    implemented: tuple[str, ...]  # of those, the ones kiln implements
    missing: tuple[str, ...]
    extra: tuple[str, ...]  # implemented by kiln, not a coremltools core op (e.g. write_state)
    tested: tuple[str, ...] = ()  # implemented ops a conformance case executed on kiln

    @property
    def ratio(self) -> float:
        return len(self.implemented) / len(self.defined) if self.defined else 1.0


def defined_op_types(opset: str) -> set[str]:
    """Core op types coremltools' ``SSAOpRegistry`` defines for ``opset`` ("iOS15".."iOS18")."""
    from coremltools.converters.mil._deployment_compatibility import AvailableTarget
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    target = getattr(AvailableTarget, opset)
    return {op_type for op_type, variants in SSAOpRegistry.core_ops.items() if target in variants}


CONFORMANCE_COVERAGE = Path(__file__).with_name("conformance_coverage.json")


def conformance_tested(path: Path = CONFORMANCE_COVERAGE) -> dict[str, set[str]]:
    """Per opset, the op types the fast conformance slice executed on kiln in passing cases."""
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    return {opset: set(ops) for opset, ops in data.get("tested", {}).items()}


def coverage() -> dict[str, OpsetCoverage]:
    """Per opset (iOS15..iOS18): defined vs implemented op types, and the implemented ones tested."""
    result = {}
    tested = conformance_tested()
    for opset in OPSETS:
        defined = defined_op_types(opset)
        implemented = implemented_op_types(opset)
        result[opset] = OpsetCoverage(
            opset=opset,
            defined=tuple(sorted(defined)),
            implemented=tuple(sorted(defined & implemented)),
            missing=tuple(sorted(defined - implemented)),
            extra=tuple(sorted(implemented - defined)),
            tested=tuple(sorted(implemented & tested.get(opset, set()))),
        )
    return result
