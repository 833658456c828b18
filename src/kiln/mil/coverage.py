"""Op coverage: which MIL op types kiln implements, per opset, against coremltools' registry, and
which of them coremltools' own op test suite executed on kiln (``conformance_coverage.json``, written
by ``make conformance-slice`` from the run of the fast conformance slice, never by hand), or kiln's own
op cases (``tests/mil/test_untested_ops.py``: ``KILN_OP_CASES``).

``APPLE_DISAGREEMENTS``: where kiln is known to compute something else than Apple's runtime (whose
results coremltools' suite records and its CI checks). kiln stands in for that runtime, so these are
kiln's shortfalls, counted against it by ``kiln ops --coverage`` and the conformance summary, not
errata of the suite."""

from __future__ import annotations

import json
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from .registry import OPSETS, implemented_op_types


@dataclass(frozen=True)
class OpsetCoverage:
    opset: str
    defined: tuple[str, ...]  # core op types coremltools defines for this opset
    implemented: tuple[str, ...]  # of those, the ones kiln implements
    missing: tuple[str, ...]
    extra: tuple[str, ...]  # implemented by kiln, not a coremltools core op (e.g. write_state)
    tested: tuple[str, ...] = ()  # implemented ops a conformance case (or a kiln op case) executed on kiln
    disagreements: tuple[str, ...] = ()  # implemented ops with a known disagreement with Apple's runtime

    @property
    def ratio(self) -> float:
        return len(self.implemented) / len(self.defined) if self.defined else 1.0


APPLE_DISAGREEMENT = "known disagreement with Apple's runtime"


@dataclass(frozen=True)
class AppleDisagreement:
    """A case where kiln's result differs from what Apple's runtime gives (the suite's expectation)."""

    op: str
    opsets: tuple[str, ...]
    case: str       # conformance case ids (fnmatch; a ``[`` is the character)
    apple: str      # what Apple's runtime gives
    kiln: str       # what kiln gives
    why: str        # why kiln does not reproduce it

    @property
    def reason(self) -> str:
        return (f"{APPLE_DISAGREEMENT}: {self.op} ({', '.join(self.opsets)}): Apple's runtime gives {self.apple}; "
                f"kiln gives {self.kiln}; {self.why}")

    def matches(self, case_id: str) -> bool:
        return fnmatchcase(case_id, self.case.replace("[", "[[]"))


APPLE_DISAGREEMENTS = (
    AppleDisagreement(
        op="crop_resize",
        opsets=("iOS15",),
        case="iOS15/test_image_resizing.py::TestCropResize::test_builder_to_backend_smoke*",
        apple=("[3.5, 5.5, 11.5, 13.5] for the normalized box [2, 2, 1, 1] (a 4x4 ramp to 2x2, "
               "UNALIGN_CORNERS), which is the crop of the full image [0, 0, 1, 1]"),
        kiln=("0 everywhere: the box scaled by H-1 is [6, 6, 3, 3], whose UNALIGN_CORNERS samples "
              "(rows and columns 5 and 4) all lie outside the image, and iOS15's crop_resize pads with 0"),
        why=("the MIL spec requires normalized coordinates in [0, 1] and says nothing of a box outside it; "
             "this one observation fits several rules (an inverted box, a box outside [0, 1], or one "
             "clamped to nothing, each taken as the full image), while the iOS16 case with an inverted, "
             "out-of-range box (ALIGN_CORNERS) expects the flipped, padded samples kiln computes; "
             "kiln does not guess the rule"),
    ),
)


def apple_disagreement_for(case_id: str) -> AppleDisagreement | None:
    return next((d for d in APPLE_DISAGREEMENTS if d.matches(case_id)), None)


def defined_op_types(opset: str) -> set[str]:
    """Core op types coremltools' ``SSAOpRegistry`` defines for ``opset`` ("iOS15".."iOS18")."""
    from coremltools.converters.mil._deployment_compatibility import AvailableTarget
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    target = getattr(AvailableTarget, opset)
    return {op_type for op_type, variants in SSAOpRegistry.core_ops.items() if target in variants}


CONFORMANCE_COVERAGE = Path(__file__).with_name("conformance_coverage.json")
#: the op types kiln's own op cases (tests/mil/op_cases.py) executed in passing cases, per opset:
#: the ops no conformance case executes, with expectations from the MIL spec
KILN_OP_CASES = Path(__file__).with_name("kiln_op_cases.json")


def conformance_tested(path: Path = CONFORMANCE_COVERAGE) -> dict[str, set[str]]:
    """Per opset, the op types the fast conformance slice (or, with ``path=KILN_OP_CASES``, kiln's op
    cases) executed on kiln in passing cases."""
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    return {opset: set(ops) for opset, ops in data.get("tested", {}).items()}


def coverage() -> dict[str, OpsetCoverage]:
    """Per opset (iOS15..iOS18): defined vs implemented op types, and the implemented ones tested."""
    result = {}
    tested = conformance_tested()
    for opset, ops in conformance_tested(KILN_OP_CASES).items():
        tested.setdefault(opset, set()).update(ops)
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
            disagreements=tuple(sorted({d.op for d in APPLE_DISAGREEMENTS if opset in d.opsets})),
        )
    return result
