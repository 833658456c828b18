"""Kokoro (StyleTTS2 + iSTFTNet) as one fixed-shape, traceable network.

The ``kokoro`` package's ``KModel.forward_with_tokens`` runs one unpadded token sequence, builds the
alignment with ``repeat_interleave`` (output length depends on predicted durations), packs LSTM
inputs, draws random numbers in the vocoder's harmonic source, and uses complex STFT/iSTFT.
:class:`FixedKokoro` computes the same thing for a token buffer of fixed length with a padding mask
and a fixed output window, using the modules (weights) of a ``KModel`` and kokoro's own layer
order, with the rewrites of :mod:`kiln.export.rewrites`:

- padded tokens and frames: every op that mixes over time (conv, LSTM, instance norm, upsampling)
  sees zeros beyond the valid part, which is what the unpadded run sees as padding; instance norms
  take statistics over valid steps only (:func:`masked_instance_norm`); bidirectional LSTMs start
  their backward direction at the last valid step (:func:`masked_lstm`);
- durations -> :func:`alignment_matrix` of ``max_frames`` columns, clamped to the window, with a flag;
- the harmonic source's random draws are inputs: ``random_phases [1, harmonics]`` (``torch.rand``,
  first harmonic zeroed as kokoro does) and ``source_noise [1, samples, harmonics]``
  (``torch.randn_like`` of the sine waves). kokoro's third draw (the noise branch's
  ``randn_like(uv)``) never reaches the audio, so it is not an input;
- STFT of the harmonic source: :class:`ConvSTFT` with a quadrant-correct phase; the reflect padding
  at the valid end is rebuilt with a gather; iSTFT: :class:`ConvISTFT` with the frame mask (the
  window-square normalisation counts valid frames only, as the shorter unpadded run does).

Note on ``random_phases``: in kokoro 0.9.4 the initial phase is added to sample 0 of the sample-rate
phase increments, which are then linearly downsampled by ``upsample_scale`` (300): each output reads
samples ``300 i + 149`` and ``300 i + 150``, never sample 0. The initial phase therefore does not
reach the audio; the input is kept (and computed with, faithfully) because the consumer's contract
has it.
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kiln.foundation.errors import ContractError, ModelError
from kiln.export import rewrites as rw


def strip_weight_norm(module: nn.Module) -> nn.Module:
    """Fold every ``weight_norm`` (kokoro uses the hook-based one) into a plain weight, computed the
    same way the hook does, so tracing stores weights instead of re-normalising on every call."""
    from torch.nn.utils import remove_weight_norm

    for sub in module.modules():
        hooks = getattr(sub, "_forward_pre_hooks", {})
        if any(type(h).__name__ == "WeightNorm" for h in hooks.values()):
            remove_weight_norm(sub)
    return module


def _keep(mask: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """``[1, L]`` bool -> ``[1, 1, L]`` float multiplier."""
    return mask.to(dtype).unsqueeze(1)


def _upsample_mask(mask: torch.Tensor, factor: int) -> torch.Tensor:
    return mask.unsqueeze(-1).expand(-1, -1, factor).reshape(mask.shape[0], -1)


def adain(norm, x: torch.Tensor, s: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """kokoro ``AdaIN1d`` with statistics over the valid steps; zero beyond them."""
    h = norm.fc(s).view(s.shape[0], -1, 1)
    gamma, beta = torch.chunk(h, chunks=2, dim=1)
    inorm = norm.norm
    y = rw.masked_instance_norm(x, mask, eps=inorm.eps)
    if inorm.affine:
        y = y * inorm.weight.view(1, -1, 1) + inorm.bias.view(1, -1, 1)
    return ((1 + gamma) * y + beta) * _keep(mask, x.dtype)


def adain_resblk(block, x: torch.Tensor, s: torch.Tensor, mask: torch.Tensor):
    """kokoro ``AdainResBlk1d`` (optionally upsampling x2); returns ``(out, out_mask)``."""
    upsampling = block.upsample_type != "none"
    out_mask = _upsample_mask(mask, 2) if upsampling else mask
    keep_out = _keep(out_mask, x.dtype)
    r = block.actv(adain(block.norm1, x, s, mask))
    if upsampling:
        r = block.pool(r) * keep_out
    r = block.conv1(r) * keep_out
    r = block.actv(adain(block.norm2, r, s, out_mask))
    r = block.conv2(r) * keep_out
    sc = F.interpolate(x, scale_factor=2, mode="nearest") if upsampling else x
    if block.learned_sc:
        sc = block.conv1x1(sc)
    # kokoro: torch.rsqrt(torch.tensor(2)), an integer tensor promoted to float32
    return (r + sc) * torch.rsqrt(torch.tensor(2.0)), out_mask


def adain_resblock1(block, x: torch.Tensor, s: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """kokoro ``AdaINResBlock1`` (the generator's Snake residual blocks), masked."""
    keep = _keep(mask, x.dtype)
    for c1, c2, n1, n2, a1, a2 in zip(block.convs1, block.convs2, block.adain1, block.adain2,
                                      block.alpha1, block.alpha2):
        xt = adain(n1, x, s, mask)
        xt = xt + (1 / a1) * (torch.sin(a1 * xt) ** 2)
        xt = c1(xt) * keep
        xt = adain(n2, xt, s, mask)
        xt = xt + (1 / a2) * (torch.sin(a2 * xt) ** 2)
        xt = c2(xt) * keep
        x = xt + x
    return x


def reflect_at_valid_end(x: torch.Tensor, valid: torch.Tensor, pad: int) -> torch.Tensor:
    """``x [1, N]`` whose first ``valid`` samples are real: samples ``valid .. valid+pad-1`` become
    the reflection of the valid end (what ``F.pad(mode='reflect')`` of the unpadded signal adds)."""
    n = x.shape[-1]
    index = torch.arange(n, dtype=torch.int32).unsqueeze(0)
    # abs, not clamp: coremltools lowers an integer clamp through fp32, which turns the index into
    # a float constant (that quantizers would then compress); past 2*valid the values are unused
    mirrored = torch.abs(2 * (valid.view(1, 1) - 1) - index)
    source = torch.where(index < valid.view(1, 1), index, mirrored)
    return torch.gather(x, 1, source.to(torch.int64))


class FixedKokoro(nn.Module):
    """``KModel.forward_with_tokens`` on a ``[1, max_tokens]`` buffer with a fixed output window.

    ``forward(input_ids, attention_mask, ref_s, random_phases, source_noise, speed)`` ->
    ``(audio [1, samples], pred_dur [1, max_tokens] int32, audio_length [1] int32,
    clamped [1] int32)``. ``attention_mask`` marks a valid prefix (1) and padding (0); durations of
    padded tokens are 0; samples at and beyond ``audio_length`` are 0.
    """

    def __init__(self, kmodel: nn.Module, max_tokens: int, samples: int):
        super().__init__()
        model = copy.deepcopy(kmodel).eval()
        strip_weight_norm(model)
        rw.disable_inplace(model)
        model.requires_grad_(False)
        self.bert, self.bert_encoder = model.bert, model.bert_encoder
        if hasattr(self.bert, "set_attn_implementation"):
            self.bert.set_attn_implementation("eager")   # plain matmuls + additive mask for tracing
        self.predictor, self.text_encoder, self.decoder = model.predictor, model.text_encoder, model.decoder
        generator = self.decoder.generator
        self.style_dim = int(self.decoder.encode.norm1.fc.in_features)   # ref_s = [decoder | prosody]
        self.max_tokens = int(max_tokens)
        context = int(model.context_length)
        if self.max_tokens > context:
            raise ContractError(f"kokoro: input_ids holds {self.max_tokens} tokens, the checkpoint's "
                                f"ALBERT has {context} positions (plbert.max_position_embeddings)")
        # samples per duration frame: F0/N are predicted at 2**(upsampling blocks) x the frame rate,
        # then upsampled to audio rate by the generator's f0_upsamp
        f0_rate = 2 ** sum(b.upsample_type != "none" for b in self.predictor.F0)
        self.f0_rate = f0_rate
        self.f0_upsample = int(generator.f0_upsamp.scale_factor)
        self.frame_samples = f0_rate * self.f0_upsample
        if samples % self.frame_samples:
            raise ContractError(f"kokoro: audio of {samples} samples is not a whole number of "
                                f"{self.frame_samples}-sample duration frames")
        self.samples = int(samples)
        self.max_frames = self.samples // self.frame_samples
        sine = generator.m_source.l_sin_gen
        self.harmonics = int(sine.dim)
        self.register_buffer("harmonic_numbers",
                             torch.arange(1, self.harmonics + 1, dtype=torch.float32).view(1, 1, -1))
        stft = generator.stft
        n_fft, hop = int(stft.filter_length), int(stft.hop_length)
        window = torch.hann_window(int(stft.win_length), periodic=True, dtype=torch.float32)
        self.n_fft, self.hop = n_fft, hop
        self.stft = rw.ConvSTFT(n_fft, hop, window)
        self.istft = rw.ConvISTFT(n_fft, hop, window)
        self.upsample_rates = [int(up.stride[0]) for up in generator.ups]
        if math.prod(self.upsample_rates) * hop != self.f0_upsample:
            raise ModelError("kokoro: generator upsampling x iSTFT hop differs from the F0 upsampling")

    # -- text side -------------------------------------------------------------------------------

    def duration_encoder(self, x: torch.Tensor, style: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``DurationEncoder.forward``: ``x [1, C, T]`` -> ``[1, T, C + style]``."""
        keep = _keep(mask, x.dtype)                                       # [1, 1, T]
        s = style.unsqueeze(-1).expand(-1, -1, x.shape[-1])              # [1, sty, T]
        x = torch.cat([x, s], dim=1) * keep                               # [1, C+sty, T]
        for block in self.predictor.text_encoder.lstms:
            if isinstance(block, nn.LSTM):
                x = rw.masked_lstm(block, x.transpose(-1, -2), mask).transpose(-1, -2)
            else:
                x = block(x.transpose(-1, -2), style).transpose(-1, -2)
                x = torch.cat([x, s], dim=1) * keep
        return x.transpose(-1, -2)

    def text_features(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``TextEncoder.forward``: ``[1, T]`` ids -> ``[1, C, T]``."""
        keep = _keep(mask)
        x = self.text_encoder.embedding(input_ids).transpose(1, 2) * keep
        for conv in self.text_encoder.cnn:
            x = conv(x) * keep
        x = rw.masked_lstm(self.text_encoder.lstm, x.transpose(1, 2), mask).transpose(-1, -2)
        return x * keep

    # -- prosody ---------------------------------------------------------------------------------

    def f0_n(self, en: torch.Tensor, s: torch.Tensor, frame_mask: torch.Tensor):
        """``ProsodyPredictor.F0Ntrain``: ``[1, C, F]`` -> F0 and N curves ``[1, 2F]``, and their mask."""
        x = rw.masked_lstm(self.predictor.shared, en.transpose(-1, -2), frame_mask)
        curves = []
        for blocks, proj in ((self.predictor.F0, self.predictor.F0_proj),
                             (self.predictor.N, self.predictor.N_proj)):
            y, mask = x.transpose(-1, -2), frame_mask
            for block in blocks:
                y, mask = adain_resblk(block, y, s, mask)
            curves.append((proj(y) * _keep(mask)).squeeze(1))
        return curves[0], curves[1], mask

    # -- vocoder ---------------------------------------------------------------------------------

    def harmonic_source(self, f0: torch.Tensor, f0_mask: torch.Tensor, random_phases: torch.Tensor,
                        source_noise: torch.Tensor) -> torch.Tensor:
        """``SourceModuleHnNSF`` on ``f0 [1, 2F]``: the merged harmonic excitation ``[1, samples]``."""
        g = self.decoder.generator
        sine = g.m_source.l_sin_gen
        scale = self.f0_upsample
        f0_up = F.interpolate(f0.unsqueeze(1), scale_factor=float(scale), mode="nearest").transpose(1, 2)
        fn = f0_up * self.harmonic_numbers                                # [1, N, H]
        ratio = fn / sine.sampling_rate
        rad = ratio - torch.floor(ratio)                                  # (x / sr) % 1
        # rand_ini[:, 0] = 0; rad_values[:, 0, :] += rand_ini  (functional)
        phases = rw.assign_along(random_phases, 1, 0, 0.0)
        rad = rw.assign_along(rad, 1, 0, rad[:, 0, :] + phases)
        rad = F.interpolate(rad.transpose(1, 2), scale_factor=1 / scale, mode="linear").transpose(1, 2)
        rad = rad * f0_mask.to(rad.dtype).unsqueeze(-1)                   # phase holds past the end
        phase = torch.cumsum(rad, dim=1) * 2 * torch.pi
        phase = F.interpolate(phase.transpose(1, 2) * scale, scale_factor=float(scale),
                              mode="linear").transpose(1, 2)
        sines = torch.sin(phase) * sine.sine_amp
        uv = (f0_up > sine.voiced_threshold).to(torch.float32)
        noise_amp = uv * sine.noise_std + (1 - uv) * sine.sine_amp / 3
        sine_waves = sines * uv + noise_amp * source_noise
        merged = g.m_source.l_tanh(g.m_source.l_linear(sine_waves))      # [1, N, 1]
        return merged.squeeze(-1)

    def generator(self, x, s, f0, f0_mask, random_phases, source_noise, samples_valid):
        g = self.decoder.generator
        har = self.harmonic_source(f0, f0_mask, random_phases, source_noise)
        har = reflect_at_valid_end(har, samples_valid, self.n_fft // 2)
        mag, angle = self.stft.magnitude_phase(har)                       # [1, bins, 1 + N/hop]
        # frame - 1 < valid // hop, not frame < valid // hop + 1: coremltools lowers an int32 `+ 1`
        # (and `<=`, and torch.div(rounding_mode="floor")) through float ops, which an fp16 package
        # computes in fp16 (a 15 s window's 72,001 frames overflow it to inf; 5 s's 24,001 rounds to
        # 24,000); `//` and `<` of int32 stay int32
        frame_minus_one = torch.arange(-1, mag.shape[-1] - 1, dtype=torch.int32).unsqueeze(0)
        stft_frames = frame_minus_one < (samples_valid // self.hop).to(torch.int32).unsqueeze(1)
        har = torch.cat([mag, angle], dim=1) * _keep(stft_frames)
        return self.vocode(x, s, har, f0_mask)

    def vocode(self, x, s, har, f0_mask):
        """The generator after its harmonic source: ``x [1, C, 2F]`` and the source's STFT ``har``
        -> audio ``[1, samples]`` (valid frames only, the rest 0)."""
        g = self.decoder.generator
        mask = f0_mask                                                    # x is at the F0 rate
        for i, rate in enumerate(self.upsample_rates):
            x = F.leaky_relu(x, negative_slope=0.1)
            mask = _upsample_mask(mask, rate)
            last = i == len(self.upsample_rates) - 1
            if last:  # ReflectionPad1d((1, 0)) adds one leading frame
                mask = torch.cat([mask[:, :1], mask], dim=1)
            keep = _keep(mask)
            x_source = g.noise_convs[i](har) * keep
            x_source = adain_resblock1(g.noise_res[i], x_source, s, mask)
            x = g.ups[i](x)
            if last:
                x = g.reflection_pad(x)
            x = x * keep + x_source
            xs = None
            for j in range(g.num_kernels):
                y = adain_resblock1(g.resblocks[i * g.num_kernels + j], x, s, mask)
                xs = y if xs is None else xs + y
            x = xs / g.num_kernels
        x = F.leaky_relu(x)
        x = g.conv_post(x)
        bins = g.post_n_fft // 2 + 1
        spec = torch.exp(x[:, :bins, :])
        phase = torch.sin(x[:, bins:, :])
        return self.istft.from_magnitude_phase(spec, phase, frame_mask=mask)

    def decode(self, asr, f0, n, s, frame_mask, f0_mask, random_phases, source_noise, samples_valid):
        d = self.decoder
        keep = _keep(frame_mask)
        f0_down = d.F0_conv(f0.unsqueeze(1)) * keep
        n_down = d.N_conv(n.unsqueeze(1)) * keep
        x = torch.cat([asr, f0_down, n_down], dim=1)
        x, mask = adain_resblk(d.encode, x, s, frame_mask)
        asr_res = d.asr_res(asr) * keep
        res = True
        for block in d.decode:
            if res:
                x = torch.cat([x, asr_res, f0_down, n_down], dim=1)
            x, mask = adain_resblk(block, x, s, mask)
            if block.upsample_type != "none":
                res = False
        return self.generator(x, s, f0, f0_mask, random_phases, source_noise, samples_valid)

    # -- the whole model -------------------------------------------------------------------------

    def forward(self, input_ids, attention_mask, ref_s, random_phases, source_noise, speed=None):
        mask = attention_mask > 0                                         # [1, T]
        ids = input_ids.to(torch.int64) * mask.to(torch.int64)
        # a prepared additive mask [1, 1, 1, T] (transformers passes a 4-D mask through as is):
        # built from the input, so no [T, T] constant fill lands in the program; exp(-1e4) is 0
        # in fp32, as with transformers' own finfo.min fill
        additive = (1.0 - mask.to(torch.float32)).view(1, 1, 1, -1) * -1.0e4
        bert_dur = self.bert(ids, attention_mask=additive)
        d_en = self.bert_encoder(bert_dur).transpose(-1, -2)
        s_pro = ref_s[:, self.style_dim:]
        s_dec = ref_s[:, :self.style_dim]
        d = self.duration_encoder(d_en, s_pro, mask)                      # [1, T, C+sty]
        x = rw.masked_lstm(self.predictor.lstm, d, mask)
        duration = torch.sigmoid(self.predictor.duration_proj(x)).sum(dim=-1)
        if speed is not None:
            duration = duration / speed.view(1, 1)
        pred_dur = torch.clamp(torch.round(duration), min=1).to(torch.int32) * mask.to(torch.int32)
        aln = rw.alignment_matrix(pred_dur, self.max_frames, mask)
        en = torch.matmul(d.transpose(-1, -2), aln.matrix)                # [1, C+sty, F]
        f0, n, f0_mask = self.f0_n(en, s_pro, aln.frame_mask)
        asr = torch.matmul(self.text_features(ids, mask), aln.matrix)     # [1, C, F]
        samples_valid = aln.frames * self.frame_samples                   # [1]
        audio = self.decode(asr, f0, n, s_dec, aln.frame_mask, f0_mask, random_phases, source_noise,
                            samples_valid)
        audio = audio * rw.length_mask(samples_valid, audio.shape[-1]).to(audio.dtype)
        return audio, aln.durations, samples_valid.to(torch.int32), aln.clamped.to(torch.int32)


class FixedKokoroComponent(nn.Module):
    """:class:`FixedKokoro` with the inputs in a component contract's order (``speed`` optional)."""

    INPUTS = ("input_ids", "attention_mask", "ref_s", "random_phases", "source_noise", "speed")

    def __init__(self, net: FixedKokoro, input_names: Sequence[str]):
        super().__init__()
        unknown = [n for n in input_names if n not in self.INPUTS]
        missing = [n for n in self.INPUTS[:-1] if n not in input_names]
        if unknown or missing:
            raise ContractError(f"kokoro: contract inputs {list(input_names)}: unknown {unknown}, "
                                f"missing {missing} (kokoro takes {', '.join(self.INPUTS)}; speed optional)")
        self.net = net
        self.input_names = tuple(input_names)

    def forward(self, *args):
        named = dict(zip(self.input_names, args))
        return self.net(**named)
