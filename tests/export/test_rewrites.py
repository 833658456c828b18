"""Each rewrite of kiln.export.rewrites against the torch op it replaces, then converted with
coremltools and run on kiln's executor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from kiln.foundation.errors import ExportError
from kiln.export import rewrites as rw


def convert_and_run(module: nn.Module, inputs: dict[str, torch.Tensor], precision: str = "fp32",
                    tmp_path=None):
    """Trace ``module`` on ``inputs`` (in order), convert to an iOS17 ML Program (fp32 compute),
    save and run it on kiln's executor. Returns (torch outputs, executor outputs, MIL op types)."""
    import coremltools as ct

    from kiln.export import torch_ops
    from kiln.export.package import save_mlpackage
    from kiln.mil import load_model

    torch_ops.register()
    args = tuple(inputs.values())
    with torch.no_grad():
        expected = module(*args)
        traced = torch.jit.trace(module, args, check_trace=False)
    expected = expected if isinstance(expected, tuple) else (expected,)
    dtypes = {torch.float32: np.float32, torch.int32: np.int32, torch.bool: np.bool_}
    mlmodel = ct.convert(
        traced, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
        inputs=[ct.TensorType(name=n, shape=tuple(v.shape), dtype=dtypes[v.dtype]) for n, v in inputs.items()],
        outputs=[ct.TensorType(name=f"out{i}") for i in range(len(expected))],
        compute_precision=ct.precision.FLOAT32, skip_model_load=True)
    ops = {op.op_type for op in mlmodel._mil_program.functions["main"].operations}
    path = save_mlpackage(mlmodel, tmp_path / "m.mlpackage")
    got = load_model(path).predict({n: v.numpy() for n, v in inputs.items()}, precision=precision)
    return [e.numpy() for e in expected], [np.asarray(got[f"out{i}"]) for i in range(len(expected))], ops


def _signal(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float32) / 16000
    return (torch.sin(2 * torch.pi * 440 * t) + 0.3 * torch.randn(n, generator=g)).unsqueeze(0)


# -- STFT ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_fft,hop,win", [(20, 5, 20), (64, 16, 48), (400, 160, 400)])
def test_conv_stft_equals_torch_stft(n_fft, hop, win):
    x = _signal(3000)
    window = torch.hann_window(win)
    ref = torch.stft(x, n_fft, hop, win, window=window, center=True, pad_mode="reflect", return_complex=True)
    real, imag = rw.ConvSTFT(n_fft, hop, window)(x)
    assert real.shape == ref.real.shape
    scale = ref.abs().max().item()
    assert torch.allclose(real, ref.real, atol=2e-5 * scale)
    assert torch.allclose(imag, ref.imag, atol=2e-5 * scale)
    mag, ang = rw.ConvSTFT(n_fft, hop, window).magnitude_phase(x)
    assert torch.allclose(mag, ref.abs(), atol=2e-5 * scale)
    strong = ref.abs() > 1e-3 * scale  # angle is ill-defined where |z| ~ 0
    assert torch.allclose(torch.cos(ang[strong] - ref.angle()[strong]), torch.ones(1), atol=1e-4)


def test_conv_stft_with_stored_basis_matches_silero_magnitude():
    from kiln.models.silero_vad.build import FILTER_LENGTH, HOP_LENGTH, STFT_PAD

    basis = torch.randn(2 * (FILTER_LENGTH // 2 + 1), 1, FILTER_LENGTH)
    x = _signal(576)
    stft = rw.ConvSTFT(FILTER_LENGTH, HOP_LENGTH, pad=(0, STFT_PAD), pad_mode="reflect", basis=basis)
    padded = torch.nn.functional.pad(x, (0, STFT_PAD), mode="reflect").unsqueeze(1)
    spectrum = torch.nn.functional.conv1d(padded, basis, None, stride=HOP_LENGTH)
    cutoff = FILTER_LENGTH // 2 + 1
    expected = torch.sqrt(spectrum[:, :cutoff] ** 2 + spectrum[:, cutoff:] ** 2)
    assert torch.equal(stft.magnitude(x), expected)
    with pytest.raises(ExportError, match=r"basis has shape \[3, 1, 256\]"):
        rw.ConvSTFT(FILTER_LENGTH, HOP_LENGTH, basis=torch.zeros(3, 1, 256))


class _StftModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.stft = rw.ConvSTFT(64, 16, torch.hann_window(64))

    def forward(self, x):
        mag, ang = self.stft.magnitude_phase(x)
        return mag, torch.cos(ang), torch.sin(ang)


def test_conv_stft_converts_and_runs(tmp_path):
    x = _signal(1024)
    expected, got, ops = convert_and_run(_StftModule(), {"x": x}, tmp_path=tmp_path)
    assert "conv" in ops and not any(o.startswith("complex") for o in ops)
    np.testing.assert_allclose(got[0], expected[0], atol=1e-4 * np.abs(expected[0]).max())
    strong = expected[0] > 1e-2 * expected[0].max()
    for e, g in zip(expected[1:], got[1:]):
        np.testing.assert_allclose(g[strong], e[strong], atol=1e-3)


# -- iSTFT ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_fft,hop", [(20, 5), (16, 4), (64, 16), (15, 5)])
def test_conv_istft_equals_torch_istft(n_fft, hop):
    g = torch.Generator().manual_seed(1)
    frames, bins = 37, n_fft // 2 + 1
    real, imag = torch.randn(2, 1, bins, frames, generator=g)
    window = torch.hann_window(n_fft)
    ref = torch.istft(torch.complex(real, imag), n_fft, hop, n_fft, window=window, center=True)
    istft = rw.ConvISTFT(n_fft, hop, window)
    got = istft(real, imag)
    assert got.shape == ref.shape == (1, istft.output_samples(frames))
    assert torch.allclose(got, ref, atol=1e-5 * ref.abs().max().item())


def test_stft_istft_round_trip_and_magnitude_phase():
    x = _signal(2000)[:, :1990]
    window = torch.hann_window(20)
    stft, istft = rw.ConvSTFT(20, 5, window), rw.ConvISTFT(20, 5, window)
    mag, ang = stft.magnitude_phase(x)
    y = istft.from_magnitude_phase(mag, ang)
    assert torch.allclose(y, x, atol=1e-4)


def test_conv_istft_refuses_a_window_that_does_not_overlap():
    with pytest.raises(ExportError, match="overlap-add is zero"):
        rw.ConvISTFT(16, 16, torch.hann_window(16))(torch.zeros(1, 9, 4), torch.zeros(1, 9, 4))


class _IstftModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.istft = rw.ConvISTFT(20, 5, torch.hann_window(20))

    def forward(self, mag, ang):
        return self.istft.from_magnitude_phase(mag, ang)


def test_conv_istft_converts_and_runs(tmp_path):
    g = torch.Generator().manual_seed(2)
    mag = torch.rand(1, 11, 50, generator=g)
    ang = torch.rand(1, 11, 50, generator=g) * 6 - 3
    expected, got, ops = convert_and_run(_IstftModule(), {"mag": mag, "ang": ang}, tmp_path=tmp_path)
    assert "conv_transpose" in ops
    np.testing.assert_allclose(got[0], expected[0], atol=5e-5)


# -- LSTM ----------------------------------------------------------------------------------------------

def test_lstm_stack_equals_nn_lstm_with_state():
    torch.manual_seed(0)
    lstm = nn.LSTM(6, 8, num_layers=2, batch_first=True).eval()
    x, h, c = torch.randn(1, 5, 6), torch.randn(2, 1, 8), torch.randn(2, 1, 8)
    ref, (h_ref, c_ref) = lstm(x, (h, c))
    out, h_new, c_new = rw.LSTMStack(lstm)(x, h, c)
    assert torch.allclose(out, ref, atol=1e-6) and torch.allclose(h_new, h_ref, atol=1e-6)
    assert torch.allclose(c_new, c_ref, atol=1e-6)


def test_lstm_stack_mask_equals_packed_sequence():
    torch.manual_seed(1)
    lstm = nn.LSTM(4, 5, batch_first=True).eval()
    x = torch.randn(1, 7, 4)
    packed = pack_padded_sequence(x, torch.tensor([4]), batch_first=True)
    ref, (h_ref, c_ref) = lstm(packed)
    ref, _ = pad_packed_sequence(ref, batch_first=True, total_length=7)
    zeros = torch.zeros(1, 1, 5)
    out, h_new, c_new = rw.LSTMStack(lstm)(x, zeros, zeros, rw.length_mask(torch.tensor([4]), 7))
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(h_new, h_ref, atol=1e-6) and torch.allclose(c_new, c_ref, atol=1e-6)


@pytest.mark.parametrize("batch_first", [True, False])
def test_masked_bidirectional_lstm_equals_packed_sequence(batch_first):
    torch.manual_seed(2)
    lstm = nn.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=batch_first).eval()
    x = torch.randn(1, 9, 4)
    for valid in (9, 5, 1):
        xin = x if batch_first else x.transpose(0, 1)
        packed = pack_padded_sequence(xin, torch.tensor([valid]), batch_first=batch_first)
        ref, _ = pad_packed_sequence(lstm(packed)[0], batch_first=batch_first, total_length=9)
        got = rw.masked_lstm(lstm, xin, rw.length_mask(torch.tensor([valid]), 9))
        assert torch.allclose(got, ref, atol=1e-6), valid


def test_reverse_valid_prefix():
    x = torch.arange(6.0).view(1, 6, 1)
    got = rw.reverse_valid_prefix(x, rw.length_mask(torch.tensor([4]), 6))
    assert got.flatten().tolist() == [3.0, 2.0, 1.0, 0.0, 4.0, 5.0]


class _BiLstmModule(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.lstm = nn.LSTM(4, 6, bidirectional=True, batch_first=True).eval()

    def forward(self, x, mask):
        return rw.masked_lstm(self.lstm, x, mask)


class _StackModule(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.stack = rw.LSTMStack(nn.LSTM(4, 6, num_layers=2))

    def forward(self, x, h, c):
        return self.stack(x, h, c)


def test_lstm_rewrites_convert_and_run(tmp_path):
    mask = rw.length_mask(torch.tensor([5]), 8).to(torch.int32)
    x = torch.randn(1, 8, 4)
    expected, got, ops = convert_and_run(_BiLstmModule(), {"x": x, "mask": mask}, tmp_path=tmp_path / "a")
    assert "lstm" in ops
    np.testing.assert_allclose(got[0], expected[0], atol=1e-5)
    h, c = torch.randn(2, 1, 6), torch.randn(2, 1, 6)
    expected, got, _ = convert_and_run(_StackModule(), {"x": x[:, :3], "h": h, "c": c}, tmp_path=tmp_path / "b")
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, atol=1e-5)


# -- masks ---------------------------------------------------------------------------------------------

def test_masked_instance_norm_equals_instance_norm_on_the_valid_part():
    torch.manual_seed(5)
    x = torch.randn(1, 3, 10)
    mask = rw.length_mask(torch.tensor([6]), 10)
    got = rw.masked_instance_norm(x, mask)
    ref = nn.InstanceNorm1d(3)(x[:, :, :6])
    assert torch.allclose(got[:, :, :6], ref, atol=1e-5)
    assert torch.all(got[:, :, 6:] == 0)


# -- durations -> alignment ----------------------------------------------------------------------------

def _repeat_interleave_alignment(durations: torch.Tensor) -> torch.Tensor:
    """How Kokoro builds its alignment (data-dependent shape)."""
    indices = torch.repeat_interleave(torch.arange(durations.shape[0]), durations)
    aln = torch.zeros(durations.shape[0], indices.shape[0])
    aln[indices, torch.arange(indices.shape[0])] = 1
    return aln


def test_alignment_matrix_equals_repeat_interleave_when_it_fits():
    durations = torch.tensor([[3, 0, 2, 5, 1]], dtype=torch.int32)
    result = rw.alignment_matrix(durations, max_frames=16)
    ref = _repeat_interleave_alignment(durations[0].long())
    assert torch.equal(result.matrix[0, :, :11], ref)
    assert torch.all(result.matrix[0, :, 11:] == 0)
    assert result.frames.tolist() == [11] and result.clamped.tolist() == [False]
    assert result.frame_mask[0].tolist() == [True] * 11 + [False] * 5
    assert torch.equal(result.durations, durations)


def test_alignment_matrix_clamps_to_the_window_and_says_so():
    durations = torch.tensor([[4, 4, 4, 4]], dtype=torch.int32)
    mask = torch.tensor([[1, 1, 1, 0]])
    result = rw.alignment_matrix(durations, max_frames=10, token_mask=mask)
    assert result.clamped.tolist() == [True] and result.frames.tolist() == [10]
    assert result.durations.tolist() == [[4, 4, 2, 0]]
    ref = _repeat_interleave_alignment(torch.tensor([4, 4, 4, 4]))[:, :10]
    ref[3] = 0
    assert torch.equal(result.matrix[0], ref)
    exact = rw.alignment_matrix(durations, max_frames=12, token_mask=mask)
    assert exact.clamped.tolist() == [False] and exact.frames.tolist() == [12]


class _AlignModule(nn.Module):
    def forward(self, features, durations, mask):
        result = rw.alignment_matrix(durations, 12, mask)
        return (torch.matmul(features, result.matrix), result.frames, result.clamped.to(torch.int32),
                result.frame_mask.to(torch.int32))


def test_alignment_matrix_converts_and_runs(tmp_path):
    features = torch.randn(1, 3, 5)
    inputs = {"features": features, "durations": torch.tensor([[2, 3, 0, 4, 9]], dtype=torch.int32),
              "mask": torch.tensor([[1, 1, 1, 1, 0]], dtype=torch.int32)}
    expected, got, ops = convert_and_run(_AlignModule(), inputs, tmp_path=tmp_path)
    assert "cumsum" in ops and "clip" not in ops   # integer math stays integer
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, atol=1e-6)
    inputs["mask"] = torch.ones(1, 5, dtype=torch.int32)   # 18 frames > 12: clamped on the executor too
    from kiln.mil import load_model
    out = load_model(tmp_path / "m.mlpackage").predict({k: v.numpy() for k, v in inputs.items()})
    assert int(np.ravel(out["out1"])[0]) == 12 and int(np.ravel(out["out2"])[0]) == 1


# -- random -> inputs ----------------------------------------------------------------------------------

class _Noisy(nn.Module):
    """Random draws as in Kokoro's SineGen: rand with an in-place write, then randn_like."""

    def forward(self, x):
        phases = torch.rand(x.shape[0], x.shape[2])
        phases[:, 0] = 0
        return torch.sin(x + phases.unsqueeze(1)) + 0.1 * torch.randn_like(x)


class _NoiseAsInputs(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, phases, noise):
        with rw.replay_random([phases, noise]):
            return self.inner(x)


def test_replay_random_reproduces_a_recorded_run():
    x = torch.randn(2, 4, 3)
    with rw.record_random() as draws:
        ref = _Noisy()(x)
    assert [(d.function, d.shape) for d in draws] == [("rand", (2, 3)), ("randn_like", (2, 4, 3))]
    values = [d.values for d in draws]
    before = values[0].clone()
    with rw.replay_random(values):
        got = _Noisy()(x)
    assert torch.equal(got, ref)
    assert torch.equal(values[0], before)  # the in-place write hit a copy


def test_replay_random_errors_name_the_draw():
    x = torch.randn(1, 4, 3)
    with pytest.raises(ExportError, match=r"draw #0 torch.rand wants shape \[1, 3\]"):
        with rw.replay_random([torch.zeros(1, 4), torch.zeros(1, 4, 3)]):
            _Noisy()(x)
    with pytest.raises(ExportError, match=r"draw #1 \(torch.randn_like\[1, 4, 3\]\) has no value"):
        with rw.replay_random([torch.zeros(1, 3)]):
            _Noisy()(x)
    with pytest.raises(ExportError, match="3 values given, the code drew 2"):
        with rw.replay_random([torch.zeros(1, 3), None, None]):
            _Noisy()(x)


def test_random_sites_become_inputs_of_the_converted_program(tmp_path):
    inputs = {"x": torch.randn(1, 4, 3), "phases": torch.rand(1, 3), "noise": torch.randn(1, 4, 3)}
    expected, got, ops = convert_and_run(_NoiseAsInputs(_Noisy()), inputs, tmp_path=tmp_path)
    assert not any(o.startswith("random") for o in ops)
    np.testing.assert_allclose(got[0], expected[0], atol=1e-5)


# -- in-place -> functional ----------------------------------------------------------------------------

def test_disable_inplace_and_assign_along():
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU(inplace=True), nn.LeakyReLU(0.2, inplace=True))
    rw.disable_inplace(net)
    assert not net[1].inplace and not net[2].inplace
    x = torch.randn(2, 3, 4)
    ref = x.clone()
    ref[:, 0] = 0
    assert torch.equal(rw.assign_along(x, 1, 0, 0.0), ref)
    ref = x.clone()
    ref[:, :, -1] = x[:, :, 0]
    assert torch.equal(rw.assign_along(x, -1, -1, x[:, :, 0]), ref)


class _Assign(nn.Module):
    def forward(self, x):
        return rw.assign_along(x, 1, 0, 0.0) * 2


def test_assign_along_converts_without_slice_update(tmp_path):
    x = torch.randn(1, 3, 4)
    expected, got, ops = convert_and_run(_Assign(), {"x": x}, tmp_path=tmp_path)
    assert "slice_update" not in ops and "scatter" not in ops
    np.testing.assert_allclose(got[0], expected[0], atol=0)


def test_phase_matches_torch_angle_on_the_axes():
    real = torch.tensor([1.0, -1.0, 0.0, 0.0, 0.0, -2.0, -2.0, 3.0])
    imag = torch.tensor([0.0, 0.0, 1.0, -1.0, 0.0, 1e-3, -1e-3, -4.0])
    assert torch.allclose(rw.phase(real, imag), torch.atan2(imag, real), atol=1e-6)


def test_conv_istft_frame_mask_equals_istft_of_the_shorter_spectrum():
    g = torch.Generator().manual_seed(7)
    real, imag = torch.randn(2, 1, 11, 30, generator=g)
    window = torch.hann_window(20)
    valid = 21
    ref = torch.istft(torch.complex(real[..., :valid], imag[..., :valid]), 20, 5, 20, window=window)
    mask = rw.length_mask(torch.tensor([valid]), 30)
    got = rw.ConvISTFT(20, 5, window)(real, imag, frame_mask=mask)
    assert got.shape == (1, 5 * 29)
    assert torch.allclose(got[:, :ref.shape[-1]], ref, atol=1e-5)
    assert torch.all(got[:, ref.shape[-1] + 10:] == 0)


def test_stft_phase_of_dc_and_nyquist_bins_equals_torch_angle():
    """An FFT gives exactly 0 imaginary parts there; the phase (0 or pi) must not depend on the
    sign of a 1e-16 rounding residue."""
    x = _signal(600) - 0.5
    window = torch.hann_window(20)
    ref = torch.stft(x, 20, 5, 20, window=window, return_complex=True)
    real, imag = rw.ConvSTFT(20, 5, window)(x)
    assert torch.all(imag[:, 0] == 0) and torch.all(imag[:, -1] == 0)
    for b in (0, -1):
        assert torch.equal(rw.phase(real, imag)[:, b], ref.angle()[:, b])
