"""The seed's Core ML rewrite table, one small function or module per rewrite.

Core ML programs have static shapes, no complex dtype, no random ops that a caller can seed, and no
in-place mutation. Each rewrite below re-expresses a torch construct that breaks one of those rules
with plain traceable ops, and is tested against the torch op it replaces
(``tests/export/test_rewrites.py``), including a conversion with coremltools and a run on kiln's
executor.

=====================================  ==========================================================
source construct                       rewrite
=====================================  ==========================================================
``torch.stft`` (complex)               :class:`ConvSTFT`: strided ``conv1d`` with a windowed DFT
                                       basis, real and imaginary parts as separate channels
``torch.istft`` (complex)              :class:`ConvISTFT`: ``conv_transpose1d`` with an inverse
                                       DFT basis (overlap-add) divided by the window-square sum
``nn.LSTM`` + hidden state,            :class:`LSTMStack` (explicit ``h``/``c`` in and out, optional
``pack_padded_sequence``               step mask) and :func:`masked_lstm` (whole-sequence LSTM on a
                                       padded batch of one, backward direction on the valid prefix)
dynamic lengths                        :func:`length_mask`, :func:`masked_instance_norm`
``repeat_interleave`` on durations     :func:`alignment_matrix`: fixed ``[T, frames]`` matrix with a
                                       clamp to the window and a flag saying it clamped
``torch.rand*``/``randn*``             :func:`record_random` / :func:`replay_random`: each draw
                                       becomes a tensor passed in (a model input)
in-place ops                           :func:`disable_inplace`, :func:`assign_along`
=====================================  ==========================================================
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kiln.foundation.errors import ExportError

__all__ = [
    "AlignmentMatrix", "ConvISTFT", "ConvSTFT", "LSTMStack", "RandomDraw", "alignment_matrix",
    "assign_along", "disable_inplace", "dft_basis", "length_mask", "magnitude", "masked_instance_norm",
    "masked_lstm", "phase", "record_random", "replay_random", "reverse_valid_prefix",
]


# -- STFT / iSTFT with real and imaginary parts split -----------------------------------------------

def _padded_window(n_fft: int, window: torch.Tensor | None) -> torch.Tensor:
    """``window`` centred in ``n_fft`` samples (as torch.stft pads a shorter window), float64."""
    out = torch.ones(n_fft, dtype=torch.float64) if window is None else torch.zeros(n_fft, dtype=torch.float64)
    if window is not None:
        win_length = int(window.numel())
        if win_length > n_fft:
            raise ExportError(f"stft: window of {win_length} samples is longer than n_fft={n_fft}")
        left = (n_fft - win_length) // 2
        out[left:left + win_length] = window.detach().to(torch.float64)
    return out


def _cos_sin(n_fft: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos``/``sin`` of ``2 pi k n / n_fft`` for the one-sided bins ``[bins, n_fft]``, float64,
    with the angle reduced mod ``n_fft`` in integers and exact zeros where the value is 0 (so the
    imaginary parts of the DC and Nyquist bins are exactly 0, as an FFT gives: ``sin(pi)`` in
    floating point is 1.2e-16, and its sign would decide the phase, +-pi, of those bins)."""
    bins = n_fft // 2 + 1
    k = torch.arange(bins, dtype=torch.int64)
    n = torch.arange(n_fft, dtype=torch.int64)
    reduced = (k[:, None] * n[None, :]) % n_fft
    angle = 2.0 * math.pi * reduced.to(torch.float64) / n_fft
    cos, sin = torch.cos(angle), torch.sin(angle)
    sin = torch.where((2 * reduced) % n_fft == 0, torch.zeros_like(sin), sin)
    cos = torch.where((4 * reduced) % (2 * n_fft) == n_fft, torch.zeros_like(cos), cos)
    return cos, sin


def dft_basis(n_fft: int, window: torch.Tensor | None = None) -> torch.Tensor:
    """Windowed one-sided DFT basis ``[2 * (n_fft//2 + 1), 1, n_fft]`` float32: rows
    ``0..bins-1`` give the real part, rows ``bins..`` the imaginary part (``-sin``, torch's sign)."""
    cos, sin = _cos_sin(n_fft)
    win = _padded_window(n_fft, window)
    basis = torch.cat([cos * win, -sin * win], dim=0)
    return basis.to(torch.float32).unsqueeze(1)


def magnitude(real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
    """``|z|`` of a split complex tensor (``torch.abs`` of the complex STFT)."""
    return torch.sqrt(real * real + imag * imag)


def phase(real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
    """``angle(z)`` of a split complex tensor (``torch.angle`` of the complex STFT), in ``(-pi, pi]``.

    Not ``torch.atan2``: coremltools 9.0 lowers it with quadrant fixes for ``y > 0`` and ``y < 0``
    only, so ``atan2(0, x<0)`` becomes 0 instead of pi, which is every DC bin of a negative-mean frame
    (a real signal's DC imaginary part is exactly 0). Here ``y == 0, x < 0`` gives pi, as torch.

    Range-safe for fp16 compute: the ``atan`` argument is the smaller magnitude over the larger
    (within [-1, 1]); where ``|y| > |x|`` the angle is ``sign(y) pi/2 - atan(x/y)``. ``y / x`` itself
    reaches ``inf`` in fp16 wherever ``|x| < |y| / 65504`` (seen in Kokoro's harmonic source).
    Masks are multiplied in, not ``where``-selected, so no constant fills land in the program.
    """
    swap = (imag.abs() > real.abs()).to(real.dtype)                       # |y| > |x|
    keep = 1.0 - swap
    numerator = imag * keep + real * swap
    denominator = real * keep + imag * swap
    denominator = denominator + (denominator == 0).to(real.dtype)         # x == y == 0: atan(0) = 0
    t = torch.atan(numerator / denominator)
    upper = (imag >= 0).to(real.dtype)
    direct = t + (real < 0).to(real.dtype) * (2.0 * upper - 1.0) * math.pi
    swapped = torch.sign(imag) * (0.5 * math.pi) - t
    return direct * keep + swapped * swap


class ConvSTFT(nn.Module):
    """``torch.stft(..., return_complex=True)`` as a strided ``conv1d``; returns ``(real, imag)``,
    each ``[B, bins, frames]``.

    ``pad`` is ``(left, right)`` samples padded with ``pad_mode`` before framing; ``center=True``
    in torch.stft is ``pad=(n_fft//2, n_fft//2)``. ``basis`` replaces the computed DFT basis with a
    stored one (Silero ships its own ``[2*bins, 1, n_fft]`` basis), rows laid out as
    :func:`dft_basis`.
    """

    def __init__(self, n_fft: int, hop: int, window: torch.Tensor | None = None, *,
                 pad: tuple[int, int] | None = None, pad_mode: str = "reflect",
                 basis: torch.Tensor | None = None):
        super().__init__()
        self.n_fft, self.hop, self.bins = int(n_fft), int(hop), int(n_fft) // 2 + 1
        self.pad = tuple(pad) if pad is not None else (self.n_fft // 2, self.n_fft // 2)
        if pad_mode not in ("reflect", "constant", "replicate"):
            raise ExportError(f"stft: pad_mode {pad_mode!r} is not one of reflect, constant, replicate")
        self.pad_mode = pad_mode
        if basis is None:
            basis = dft_basis(self.n_fft, window)
        elif tuple(basis.shape) != (2 * self.bins, 1, self.n_fft):
            raise ExportError(f"stft: basis has shape {list(basis.shape)}, expected "
                              f"[{2 * self.bins}, 1, {self.n_fft}] for n_fft={self.n_fft}")
        self.register_buffer("basis", basis.detach().to(torch.float32).clone())

    def frames(self, samples: int) -> int:
        return 1 + (samples + sum(self.pad) - self.n_fft) // self.hop

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = audio.unsqueeze(1)                                             # [B, 1, N]
        if any(self.pad):
            x = F.pad(x, self.pad, mode=self.pad_mode)
        spectrum = F.conv1d(x, self.basis, stride=self.hop)                # [B, 2*bins, frames]
        return spectrum[:, :self.bins, :], spectrum[:, self.bins:, :]

    def magnitude(self, audio: torch.Tensor) -> torch.Tensor:
        return magnitude(*self(audio))

    def magnitude_phase(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        real, imag = self(audio)
        return magnitude(real, imag), phase(real, imag)


class ConvISTFT(nn.Module):
    """``torch.istft`` of a split complex spectrum ``(real, imag)`` ``[B, bins, frames]`` -> ``[B, N]``.

    Each frame's inverse real DFT times the synthesis window is one ``conv_transpose1d`` (stride
    ``hop``, which also overlap-adds the frames); the result is divided by the overlapped squared
    window (torch.istft's normalisation) and ``center`` trims ``n_fft//2`` samples each side. The
    imaginary parts of the DC and Nyquist bins are ignored, as ``irfft`` does. ``N`` is
    ``hop * (frames - 1)`` with ``center`` (torch.istft's default length).
    """

    def __init__(self, n_fft: int, hop: int, window: torch.Tensor | None = None, *, center: bool = True):
        super().__init__()
        self.n_fft, self.hop, self.bins, self.center = int(n_fft), int(hop), int(n_fft) // 2 + 1, center
        win = _padded_window(self.n_fft, window)
        cos, sin = _cos_sin(self.n_fft)
        # irfft weights: DC and Nyquist once, the other bins twice (their conjugate mirror)
        scale = torch.full((self.bins, 1), 2.0, dtype=torch.float64)
        scale[0] = 1.0
        if self.n_fft % 2 == 0:
            scale[-1] = 1.0
        real_rows = scale * cos / self.n_fft * win
        imag_rows = -scale * sin / self.n_fft * win
        basis = torch.cat([real_rows, imag_rows], dim=0).to(torch.float32).unsqueeze(1)
        self.register_buffer("basis", basis)                               # [2*bins, 1, n_fft]
        self.register_buffer("window_square", (win * win).to(torch.float32).view(1, 1, -1))

    def output_samples(self, frames: int) -> int:
        full = self.n_fft + self.hop * (frames - 1)
        return full - 2 * (self.n_fft // 2) if self.center else full

    def inverse_envelope(self, frames: int) -> torch.Tensor:
        """``1 / sum of overlapped window**2`` for ``frames`` frames, cropped like the output.
        Built from Python ints, so tracing stores it as a constant."""
        ones = torch.ones(1, 1, frames, dtype=torch.float32)
        envelope = F.conv_transpose1d(ones, self.window_square, stride=self.hop)[0, 0]
        if self.center:
            envelope = envelope[self.n_fft // 2: envelope.numel() - self.n_fft // 2]
        if bool((envelope < 1e-11).any()):
            raise ExportError(f"istft: window overlap-add is zero somewhere (n_fft={self.n_fft}, "
                              f"hop={self.hop}); torch.istft refuses this too")
        return 1.0 / envelope

    def forward(self, real: torch.Tensor, imag: torch.Tensor,
                frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``frame_mask [B, frames]`` (optional): only the marked frames exist, as in a shorter
        spectrum; the others contribute nothing, and the window-square normalisation counts the
        marked frames only, so samples covered by the marked frames equal ``torch.istft`` of the
        shorter spectrum. Samples no marked frame covers are 0."""
        frames = int(real.shape[-1])
        if frame_mask is not None:
            keep = frame_mask.to(real.dtype).unsqueeze(1)                 # [B, 1, frames]
            real, imag = real * keep, imag * keep
        spectrum = torch.cat([real, imag], dim=1)                          # [B, 2*bins, frames]
        audio = self._crop(F.conv_transpose1d(spectrum, self.basis, stride=self.hop))[:, 0, :]
        if frame_mask is None:
            return audio * self.inverse_envelope(frames)
        envelope = self._crop(F.conv_transpose1d(keep, self.window_square, stride=self.hop))[:, 0, :]
        # no frame covers a sample: its audio is 0 too, and it stays 0 (no where() with constant
        # fills: coremltools folds those into window-sized constants, which quantizers then touch)
        covered = (envelope > 1e-11).to(audio.dtype)
        return audio / torch.clamp(envelope, min=1e-11) * covered

    def _crop(self, full: torch.Tensor) -> torch.Tensor:
        if not self.center:
            return full
        half = self.n_fft // 2
        return full[:, :, half:full.shape[-1] - half]

    def from_magnitude_phase(self, mag: torch.Tensor, angle: torch.Tensor,
                             frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``istft(mag * exp(1j * angle))`` without a complex tensor."""
        return self(mag * torch.cos(angle), mag * torch.sin(angle), frame_mask)


# -- LSTM with explicit state, masks instead of packed sequences -----------------------------------

def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``[B, max_len]`` bool, True where ``index < lengths[b]`` (a fixed-shape padding mask)."""
    index = torch.arange(max_len, dtype=torch.int32).unsqueeze(0)
    return index < lengths.to(torch.int32).unsqueeze(1)


def reverse_valid_prefix(x: torch.Tensor, mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Reverse the first ``mask.sum()`` entries of ``x`` along ``dim`` and keep the padding where it
    is (batch of one). ``x[:, :L].flip(1)`` with a data-dependent ``L``, as a fixed-shape gather.

    ``mask``: ``[1, T]`` bool/float, a contiguous valid prefix.
    """
    steps = mask.shape[1]
    valid = mask.to(torch.int32).sum(dim=1)                               # [1]
    index = torch.arange(steps, dtype=torch.int32)
    flipped = valid - 1 - index                                           # L-1-t on the prefix
    source = torch.where(index < valid, flipped, index).to(torch.int64)   # [T]
    return torch.index_select(x, dim, source)


def _lstm_weights(lstm: nn.LSTM, layer: int, suffix: str = "") -> tuple[torch.Tensor, ...]:
    names = (f"weight_ih_l{layer}{suffix}", f"weight_hh_l{layer}{suffix}",
             f"bias_ih_l{layer}{suffix}", f"bias_hh_l{layer}{suffix}")
    return tuple(getattr(lstm, n) for n in names)


def _check_plain_lstm(lstm: nn.LSTM) -> None:
    if getattr(lstm, "proj_size", 0):
        raise ExportError("lstm: projections (proj_size > 0) are not supported by this rewrite")
    if not lstm.bias:
        raise ExportError("lstm: an LSTM without biases is not supported by this rewrite")


def masked_lstm(lstm: nn.LSTM, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``pack_padded_sequence -> lstm -> pad_packed_sequence`` for a padded batch of one.

    ``x`` ``[1, T, F]`` (``[T, 1, F]`` when not ``batch_first``), ``mask`` ``[1, T]`` a valid prefix.
    The forward direction runs over the whole padded sequence (padding comes after the valid steps,
    so it cannot reach them); the backward direction runs over the valid prefix reversed in place,
    so it starts at the last valid step with zero state, as with a packed sequence. Outputs at padded
    steps are zero, as ``pad_packed_sequence`` gives. Each direction is one whole-sequence LSTM
    (Core ML's ``lstm`` op), not an unrolled loop. Final states are not returned (use
    :class:`LSTMStack` where they are needed).
    """
    _check_plain_lstm(lstm)
    seq = x if lstm.batch_first else x.transpose(0, 1)                    # [1, T, F]
    keep = mask.to(seq.dtype).unsqueeze(-1)                               # [1, T, 1]
    for layer in range(lstm.num_layers):
        forward_out = _lstm_layer(seq, _lstm_weights(lstm, layer))
        outputs = [forward_out]
        if lstm.bidirectional:
            reversed_in = reverse_valid_prefix(seq, mask, dim=1)
            backward_out = _lstm_layer(reversed_in, _lstm_weights(lstm, layer, "_reverse"))
            outputs.append(reverse_valid_prefix(backward_out, mask, dim=1))
        seq = torch.cat(outputs, dim=-1) * keep
    return seq if lstm.batch_first else seq.transpose(0, 1)


def _lstm_layer(seq: torch.Tensor, weights: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """One unidirectional layer over ``seq`` ``[1, T, F]`` from zero state (``aten::lstm``)."""
    hidden = weights[1].shape[1]
    zeros = torch.zeros(1, seq.shape[0], hidden, dtype=seq.dtype)
    out, _, _ = torch.lstm(seq, (zeros, zeros), list(weights), True, 1, 0.0, False, False, True)
    return out


class LSTMStack(nn.Module):
    """``nn.LSTM`` (unidirectional, ``batch_first``-agnostic) for a fixed, short number of steps with
    the state as explicit inputs and outputs: ``forward(x [B, T, F], h [L, B, H], c [L, B, H],
    mask [B, T] | None) -> (out [B, T, H], h_new, c_new)``.

    Each step is ``torch.lstm_cell`` (gate math, no sequence op); a masked step
    keeps the previous state and outputs zeros, so padding never changes the state, which is what
    ``pack_padded_sequence`` achieves. Use :func:`masked_lstm` for long sequences.
    """

    def __init__(self, lstm: nn.LSTM | nn.LSTMCell):
        super().__init__()
        if isinstance(lstm, nn.LSTMCell):
            layers = [(lstm.weight_ih, lstm.weight_hh, lstm.bias_ih, lstm.bias_hh)]
        else:
            _check_plain_lstm(lstm)
            if lstm.bidirectional:
                raise ExportError("lstm: LSTMStack carries state one way; a bidirectional LSTM has "
                                  "no streaming state (use masked_lstm)")
            layers = [_lstm_weights(lstm, layer) for layer in range(lstm.num_layers)]
        self.num_layers = len(layers)
        self.weights = nn.ParameterList(nn.Parameter(w.detach().clone(), requires_grad=False)
                                        for layer in layers for w in layer)

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
                mask: torch.Tensor | None = None):
        hs = [h[i] for i in range(self.num_layers)]
        cs = [c[i] for i in range(self.num_layers)]
        outputs = []
        for t in range(x.shape[1]):
            step = x[:, t, :]
            keep = None if mask is None else mask[:, t:t + 1].to(x.dtype)
            for i in range(self.num_layers):
                w_ih, w_hh, b_ih, b_hh = self.weights[4 * i: 4 * i + 4]
                h_new, c_new = torch.lstm_cell(step, (hs[i], cs[i]), w_ih, w_hh, b_ih, b_hh)
                if keep is not None:
                    h_new = keep * h_new + (1.0 - keep) * hs[i]
                    c_new = keep * c_new + (1.0 - keep) * cs[i]
                hs[i], cs[i] = h_new, c_new
                step = h_new
            outputs.append(step if keep is None else step * keep)
        return torch.stack(outputs, dim=1), torch.stack(hs, dim=0), torch.stack(cs, dim=0)


def masked_instance_norm(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``nn.InstanceNorm1d`` (no affine) of ``x [B, C, T]`` over the valid steps only
    (``mask [B, T]``): what the source computes on the unpadded sequence. Padded steps are zero.

    Range-safe for fp16 compute (max 65504): no sum over time, no count of steps and no square
    of an unscaled value. Means are ``mean`` over the whole axis divided by the valid fraction
    (both bounded by the data), and the variance is taken of ``centered / s`` with ``s`` the
    channel's largest deviation (at least ``sqrt(eps)``), which is exact:
    ``c / sqrt(var + eps) = (c/s) / sqrt(var/s^2 + eps/s^2)``. The plain form overflowed in
    Kokoro's vocoder (sums of squares over 24,001 steps reached 7.6e4)."""
    keep = mask.to(x.dtype).unsqueeze(1)                                  # [B, 1, T]
    valid = keep.mean(dim=2, keepdim=True)                                # fraction of valid steps
    valid = valid + (valid <= 0).to(x.dtype)                              # no valid step: divide by 1
    mean = (x * keep).mean(dim=2, keepdim=True) / valid
    centered = (x - mean) * keep
    scale = torch.clamp(centered.abs().amax(dim=2, keepdim=True), min=math.sqrt(eps))
    unit = centered / scale
    var = (unit * unit).mean(dim=2, keepdim=True) / valid                 # biased, as InstanceNorm
    return unit / torch.sqrt(var + eps / (scale * scale))


# -- durations -> alignment -------------------------------------------------------------------------

@dataclass
class AlignmentMatrix:
    """Fixed-shape result of :func:`alignment_matrix`."""
    matrix: torch.Tensor       # [B, T, frames] float: 1 where frame f belongs to token t
    frame_mask: torch.Tensor   # [B, frames] bool: frames that belong to some token
    frames: torch.Tensor       # [B] int32: valid frames (total duration after the clamp)
    durations: torch.Tensor    # [B, T] int32: durations after the clamp (0 past the window)
    clamped: torch.Tensor      # [B] bool: the unclamped total did not fit the window


def alignment_matrix(durations: torch.Tensor, max_frames: int,
                     token_mask: torch.Tensor | None = None) -> AlignmentMatrix:
    """The alignment ``repeat_interleave(arange(T), durations)`` one-hot encodes, as a fixed
    ``[B, T, max_frames]`` matrix built from cumulative sums and comparisons (no data-dependent
    shape). Tokens are laid out in order; a total beyond ``max_frames`` is cut at the window end
    (later tokens get fewer or no frames) and ``clamped`` says so. Masked tokens get no frames.
    """
    dur = durations.to(torch.int32)
    if token_mask is not None:
        dur = dur * token_mask.to(torch.int32)
    # maximum/minimum, not clamp: coremltools lowers an integer clamp through fp32
    dur = torch.maximum(dur, torch.zeros_like(dur))
    end = torch.cumsum(dur, dim=1).to(torch.int32)                        # [B, T]
    total = end[:, -1]
    end = torch.minimum(end, torch.full_like(end, max_frames))
    start = torch.cat([torch.zeros_like(end[:, :1]), end[:, :-1]], dim=1)
    frame = torch.arange(max_frames, dtype=torch.int32).view(1, 1, -1)
    inside = (frame >= start.unsqueeze(-1)) & (frame < end.unsqueeze(-1))  # [B, T, frames]
    frames = end[:, -1]
    return AlignmentMatrix(
        matrix=inside.to(torch.float32),
        frame_mask=frame[:, 0, :] < frames.unsqueeze(1),
        frames=frames,
        durations=end - start,
        clamped=total > max_frames,
    )


# -- random generation -> explicit inputs ----------------------------------------------------------

_RANDOM_FUNCTIONS = ("rand", "randn", "rand_like", "randn_like")


@dataclass
class RandomDraw:
    """One random call a module made: which function, the shape, and the values drawn."""
    function: str
    shape: tuple[int, ...]
    values: torch.Tensor = field(repr=False)


def _shape_of(function: str, args, kwargs) -> tuple[int, ...]:
    if function.endswith("_like"):
        return tuple(args[0].shape)
    size = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)) else args
    return tuple(int(s) for s in size or kwargs.get("size", ()))


@contextlib.contextmanager
def _patched_random(handler) -> Iterator[None]:
    originals = {name: getattr(torch, name) for name in _RANDOM_FUNCTIONS}

    def make(name):
        def patched(*args, **kwargs):
            return handler(name, originals[name], args, kwargs)
        return patched

    try:
        for name in _RANDOM_FUNCTIONS:
            setattr(torch, name, make(name))
        yield
    finally:
        for name, fn in originals.items():
            setattr(torch, name, fn)


@contextlib.contextmanager
def record_random() -> Iterator[list[RandomDraw]]:
    """Run code as usual but record every ``torch.rand/randn/rand_like/randn_like`` draw (in call
    order): what :func:`replay_random` must be given to reproduce the run."""
    draws: list[RandomDraw] = []

    def handler(name, original, args, kwargs):
        value = original(*args, **kwargs)
        draws.append(RandomDraw(name, tuple(value.shape), value.detach().clone()))
        return value

    with _patched_random(handler):
        yield draws


@contextlib.contextmanager
def replay_random(values: Sequence[torch.Tensor | None]) -> Iterator[None]:
    """Within the block, the i-th random draw returns ``values[i]`` instead (a copy, so in-place
    writes by the caller never reach the tensor passed in). Traced inside this block, the random
    sites become whatever ``values`` are: graph inputs when they are the traced inputs. ``None``
    gives zeros (for draws that never reach an output). A draw whose shape differs, or more draws
    than values, raises :class:`ExportError` naming the call."""
    index = 0

    def handler(name, original, args, kwargs):
        nonlocal index
        shape = _shape_of(name, args, kwargs)
        if index >= len(values):
            raise ExportError(f"replay_random: draw #{index} (torch.{name}{list(shape)}) has no value; "
                              f"{len(values)} given")
        value = values[index]
        index += 1
        if value is None:
            like = args[0] if name.endswith("_like") else None
            return torch.zeros_like(like) if like is not None else torch.zeros(shape)
        if tuple(value.shape) != shape:
            raise ExportError(f"replay_random: draw #{index - 1} torch.{name} wants shape {list(shape)}, "
                              f"the value given has {list(value.shape)}")
        return value.clone()

    with _patched_random(handler):
        yield
    if index != len(values):
        raise ExportError(f"replay_random: {len(values)} values given, the code drew {index}")


# -- in-place -> functional ----------------------------------------------------------------------------

def disable_inplace(module: nn.Module) -> nn.Module:
    """Set ``inplace=False`` on every submodule that has the flag (ReLU, LeakyReLU, Dropout, ...);
    returns ``module``. In-place activations trace to ``aten::relu_`` etc. that alias their input."""
    for sub in module.modules():
        if isinstance(getattr(sub, "inplace", None), bool):
            sub.inplace = False
    return module


def assign_along(x: torch.Tensor, dim: int, index: int, value: torch.Tensor | float) -> torch.Tensor:
    """``y = x.clone(); y.select(dim, index)[...] = value`` without mutation (``torch.where`` on a
    one-hot mask), e.g. ``rand_ini[:, 0] = 0``."""
    dim = dim % x.dim()
    shape = [1] * x.dim()
    shape[dim] = x.shape[dim]
    hit = (torch.arange(x.shape[dim]) == (index % x.shape[dim])).view(shape)
    value = torch.as_tensor(value, dtype=x.dtype)
    if value.dim() == x.dim() - 1:
        value = value.unsqueeze(dim)
    return torch.where(hit, value, x)
