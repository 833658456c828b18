"""coremltools' graph-pass pipelines with one program validation per pipeline, not one per pass.

coremltools 9.0's ``PassPipelineManager.apply_pipeline`` validates the whole program before a
pipeline and again after each of its passes (``Program.validate``: every op's inputs, outputs and
block visibility), about 115 validations per conversion. Validation only checks; it changes nothing.
On the tiny Kokoro (3,573 torch ops) it was a third of ``ct.convert``'s CPU time (18.0 → 12.2 s),
the package bytes identical. Within :func:`validation_per_pipeline`, a pipeline validates the program
once, after its last pass, and keeps the validation with the essential-scope check that follows each
dead-code elimination (the only place coremltools checks scope info), so a pass that breaks the
program is still caught before the program is saved, only named less precisely.
"""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def validation_per_pipeline() -> Iterator[None]:
    """Within the block, each coremltools pass pipeline validates the program once, at its end."""
    from coremltools.converters.mil.mil.passes.pass_pipeline import PassPipelineManager
    from coremltools.converters.mil.mil.program import Program

    original_apply = PassPipelineManager.__dict__["apply_pipeline"]   # the staticmethod, restored as is
    apply = original_apply.__func__
    validate = Program.validate

    def scope_checks_only(self, check_essential_scope: bool = False) -> None:
        if check_essential_scope:   # after dead-code elimination: coremltools' only scope-info check
            validate(self, check_essential_scope=True)

    def apply_pipeline(prog, pass_pipeline):
        Program.validate = scope_checks_only
        try:
            apply(prog, pass_pipeline)
        finally:
            Program.validate = validate
        prog.validate()

    PassPipelineManager.apply_pipeline = staticmethod(apply_pipeline)
    try:
        yield
    finally:
        PassPipelineManager.apply_pipeline = original_apply
        Program.validate = validate
