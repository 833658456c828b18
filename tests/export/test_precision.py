"""fp16 export: the phase-accumulator policy (cumsum -> sin kept fp32) and the range-safe rewrites
(instance norm, STFT phase) that keep Kokoro's vocoder finite in fp16 compute."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from kiln.config import ExportSettings, TensorSpec
from kiln.export import rewrites as rw
from kiln.export.convert import convert_traced, trace_component
from kiln.export.package import save_mlpackage


class PhaseSource(nn.Module):
    """A harmonic source in miniature: per-step cycles -> running phase -> sine, plus an ordinary
    branch that the policy must leave in fp16."""

    def forward(self, cycles, other):
        phase = torch.cumsum(cycles, dim=1) * (2 * math.pi) * 300.0
        return torch.sin(phase) + 0.0 * other, torch.tanh(other * 2.0)


def _component(precision: str, steps: int = 4000):
    """What convert_traced reads of a component: its contract and export settings."""
    def tensors(*names):
        return tuple(TensorSpec(n, (1, steps), "float32") for n in names)

    settings = ExportSettings(deployment_target="iOS17", compute_precision=precision, compute_units="CPU_ONLY",
                              runtime_compute_units=("all",))
    return SimpleNamespace(model="m", name="phase_source", inputs=tensors("cycles", "other"),
                           outputs=tensors("wave", "plain"), export=settings)


def test_fp16_policy_keeps_the_phase_accumulator_fp32_and_its_sine_right(tmp_path):
    from kiln.mil import load_model

    comp = _component("float16")
    rng = np.random.default_rng(0)
    # dyadic increments: the running sum is exact in fp32, so torch and the executor agree on it
    feed = {"cycles": (rng.integers(51, 82, (1, 4000)) / 1024).astype(np.float32),
            "other": rng.standard_normal((1, 4000)).astype(np.float32)}
    traced = trace_component(PhaseSource().eval(), comp, feed)
    report: dict = {}
    save_mlpackage(convert_traced(traced, comp, comp.export, report), tmp_path / "p.mlpackage")
    assert report["fp32_op_types"].get("cumsum") == 1 and report["fp32_op_types"].get("sin") == 1
    assert "tanh" not in report["fp32_op_types"]
    with torch.no_grad():
        expected = [t.numpy() for t in PhaseSource()(*(torch.from_numpy(feed[k]) for k in ("cycles", "other")))]
    out = load_model(tmp_path / "p.mlpackage").plan("fp16").run(feed)
    # the phase reaches 2 pi x 300 x 260 cycles = 4.9e5 (fp16 overflows at 65504)
    assert np.all(np.isfinite(out["wave"]))
    assert np.abs(out["wave"] - expected[0]).max() < 0.05
    # the ordinary branch was computed in fp16 (its error is fp16's, not fp32's)
    assert 1e-5 < np.abs(out["plain"] - expected[1]).max() < 5e-3


def test_without_the_policy_the_same_program_overflows(tmp_path):
    """The reason for the policy: coremltools' plain fp16 cast of the same program."""
    import coremltools as ct

    from kiln.mil import load_model

    comp = _component("float16")
    feed = {"cycles": np.full((1, 4000), 0.07, np.float32), "other": np.zeros((1, 4000), np.float32)}
    traced = trace_component(PhaseSource().eval(), comp, feed)
    import kiln.export.convert as convert

    original = convert.compute_precision
    convert.compute_precision = lambda settings, report=None: ct.precision.FLOAT16
    try:
        save_mlpackage(convert_traced(traced, comp, comp.export), tmp_path / "plain.mlpackage")
    finally:
        convert.compute_precision = original
    out = load_model(tmp_path / "plain.mlpackage").plan("fp16").run(feed)
    assert not np.all(np.isfinite(out["wave"]))


def test_masked_instance_norm_is_range_safe_in_fp16():
    """Sums of squares over 30,000 steps of values ~300 overflow fp16; the rewrite stays within
    range and equals the fp32 result to fp16 rounding."""
    torch.manual_seed(0)
    x = 300.0 * torch.randn(1, 4, 30000) + 50.0
    mask = rw.length_mask(torch.tensor([25000]), 30000)
    ref = nn.InstanceNorm1d(4)(x[:, :, :25000])
    got = rw.masked_instance_norm(x.half(), mask).float()
    assert torch.all(torch.isfinite(got))
    assert torch.allclose(got[:, :, :25000], ref, atol=2e-2)
    assert torch.all(got[:, :, 25000:] == 0)


def test_stft_phase_is_range_safe_and_equals_angle():
    real = torch.tensor([1.0, -1.0, 0.0, 0.0, -2.0, 1e-6, -1e-6, 3.0, 0.0])
    imag = torch.tensor([0.0, 0.0, 1.0, -1.0, 1.0, 2.0, -2.0, -4.0, 0.0])
    expected = torch.angle(torch.complex(real, imag))
    assert torch.allclose(rw.phase(real, imag), expected, atol=1e-6)
    # fp16: |y/x| would be 2e6 (inf in fp16); the rewrite never forms it
    got = rw.phase(real.half(), imag.half()).float()
    assert torch.all(torch.isfinite(got)) and torch.allclose(got, expected, atol=2e-3)


class SourceWithTransform(nn.Module):
    """A phase accumulator whose sine is analysed by a strided conv (a harmonic source's STFT),
    and an ordinary conv elsewhere that the policy must leave in fp16."""

    def __init__(self):
        super().__init__()
        self.stft = nn.Conv1d(1, 8, kernel_size=16, stride=4, bias=False)
        self.other = nn.Conv1d(1, 8, kernel_size=16, stride=4, bias=False)

    def forward(self, cycles, other):
        wave = torch.tanh(torch.sin(torch.cumsum(cycles, dim=1) * (2 * math.pi)) * 0.1)
        return self.stft(wave.unsqueeze(1)), self.other(other.unsqueeze(1))


def test_the_sources_transform_keeps_an_fp32_basis_and_other_convs_stay_fp16(tmp_path):
    """The conv after the sine (the STFT of a harmonic source) stays fp32, so its weight (a DFT
    basis) is stored in fp32; the other conv computes, and stores its weight, in fp16."""
    from kiln.mil import load_model

    torch.manual_seed(0)
    net = SourceWithTransform().eval()
    comp = _component("float16", steps=400)
    comp.outputs = tuple(TensorSpec(n, (1, 8, 97), "float32") for n in ("spectrum", "plain"))
    rng = np.random.default_rng(0)
    feed = {"cycles": rng.uniform(0.01, 0.1, (1, 400)).astype(np.float32),
            "other": rng.standard_normal((1, 400)).astype(np.float32)}
    report: dict = {}
    save_mlpackage(convert_traced(trace_component(net, comp, feed), comp, comp.export, report),
                   tmp_path / "t.mlpackage")
    assert report["fp32_op_types"]["conv"] == 1 and {"cumsum", "sin", "tanh"} <= set(report["fp32_op_types"])
    model = load_model(tmp_path / "t.mlpackage")
    function = model.program.functions["main"]
    block = function.block_specializations[function.opset]
    dtypes = {out.name: out.type.tensorType.dataType for op in block.operations for out in op.outputs}
    FLOAT16, FLOAT32 = 10, 11   # MIL_pb2.DataType
    weights = sorted(dtypes[op.inputs["weight"].arguments[0].name] for op in block.operations if op.type == "conv")
    assert weights == [FLOAT16, FLOAT32]
    with torch.no_grad():
        expected = net(*(torch.from_numpy(feed[k]) for k in ("cycles", "other")))[0].numpy()
    got = model.plan("fp16").run(feed)["spectrum"]
    assert np.abs(got - expected).max() < 1e-5   # fp32 throughout: no fp16 rounding in the spectrum
