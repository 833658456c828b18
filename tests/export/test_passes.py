"""One program validation per coremltools pass pipeline (kiln.export.passes): the same package
bytes, far fewer validations, a program broken by a pass still refused, and coremltools as it was
after the block."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

from kiln.export.package import save_mlpackage
from kiln.export.passes import validation_per_pipeline


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv1d(4, 8, 3, padding=1)
        self.linear = torch.nn.Linear(16, 16)

    def forward(self, x):
        return self.linear(torch.relu(self.conv(x))).sum(dim=1)


def _convert():
    import coremltools as ct

    traced = torch.jit.trace(_Net().eval(), torch.zeros(1, 4, 16))
    with contextlib.redirect_stdout(io.StringIO()):
        return ct.convert(traced, inputs=[ct.TensorType(name="x", shape=(1, 4, 16), dtype=np.float32)],
                          convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
                          compute_precision=ct.precision.FLOAT16, skip_model_load=True)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def validations(monkeypatch):
    """Counts full program validations (``Program.validate`` calls that reach coremltools' own)."""
    from coremltools.converters.mil.mil.program import Program

    count = {"n": 0}
    original = Program.validate

    def counted(self, check_essential_scope=False):
        count["n"] += 1
        return original(self, check_essential_scope=check_essential_scope)
    monkeypatch.setattr(Program, "validate", counted)
    return count


def test_same_package_bytes_with_a_fraction_of_the_validations(tmp_path, validations):
    save_mlpackage(_convert(), tmp_path / "per_pass.mlpackage")
    per_pass = validations["n"]
    validations["n"] = 0
    with validation_per_pipeline():
        save_mlpackage(_convert(), tmp_path / "per_pipeline.mlpackage")
    per_pipeline = validations["n"]
    assert _files(tmp_path / "per_pass.mlpackage") == _files(tmp_path / "per_pipeline.mlpackage")
    # coremltools 9.0: one before each of the 3 pipelines and one after each pass (~115)
    assert per_pass > 100
    # kept: one per pipeline and the scope-checked one after each dead-code elimination
    assert 3 <= per_pipeline < per_pass / 4


def test_a_pass_that_breaks_the_program_is_still_refused(monkeypatch):
    from coremltools.converters.mil.mil.block import InvalidBlockStateError
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY

    noop = PASS_REGISTRY["common::noop_elimination"]
    original_apply = type(noop).apply

    def corrupting_apply(self, prog):
        original_apply(self, prog)
        op = next(op for op in prog.functions["main"].operations if op.outputs and op.outputs[0].child_ops)
        op.outputs[0]._child_ops.append(op.outputs[0].child_ops[0])   # a consumer counted twice
    monkeypatch.setattr(type(noop), "apply", corrupting_apply)
    with pytest.raises(InvalidBlockStateError, match="should be consumed by op"):
        _convert()
    # per pipeline: a later pass or the pipeline's validation refuses it (here dead-code elimination
    # finds the op it would delete still used), never a saved program
    with validation_per_pipeline(), pytest.raises((InvalidBlockStateError, ValueError),
                                                  match="should be consumed by op|used by ops"):
        _convert()


def test_coremltools_is_restored_after_the_block_even_on_error():
    from coremltools.converters.mil.mil.passes.pass_pipeline import PassPipelineManager
    from coremltools.converters.mil.mil.program import Program

    apply, validate = PassPipelineManager.__dict__["apply_pipeline"], Program.validate
    with pytest.raises(RuntimeError, match="inside"):
        with validation_per_pipeline():
            assert PassPipelineManager.__dict__["apply_pipeline"] is not apply
            raise RuntimeError("inside")
    assert PassPipelineManager.__dict__["apply_pipeline"] is apply
    assert Program.validate is validate
