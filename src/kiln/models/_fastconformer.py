"""Traceable wrappers of NeMo's FastConformer transducer modules (shared by the Parakeet families):
the encoder with fixed shapes and fp16-safe attention, the RNN-T prediction net as one step with
explicit LSTM state, and the joint network (raw logits, or the greedy decision)."""

from __future__ import annotations

import torch
from torch import nn

from kiln.foundation.errors import ModelError
from kiln.models import _nemo

MASK_VALUE = -10000.0  # NeMo's INF_VAL; finite in fp16 (max 65504)


class EncoderWrapper(nn.Module):
    """NeMo's ``ConformerEncoder.forward_internal`` for a fixed number of mel frames, with the
    layers' self-attention re-expressed fp16-safely (same weights, same math)."""

    def __init__(self, encoder, mel_frames: int):
        super().__init__()
        if encoder.self_attention_model != "rel_pos":
            raise ModelError(f"encoder: self_attention_model={encoder.self_attention_model!r} is not "
                             "supported (rel_pos only)")
        if encoder.att_context_style != "regular":
            raise ModelError(f"encoder: att_context_style={encoder.att_context_style!r} is not supported")
        if getattr(encoder, "reduction_position", None) is not None:
            raise ModelError("encoder: in-encoder reduction subsampling is not supported")
        self.encoder = encoder
        self.mel_frames = int(mel_frames)
        self.frames = self.output_frames(encoder, mel_frames)
        t = self.frames
        pos_enc = encoder.pos_enc
        pos_enc.extend_pe(t, torch.device("cpu"), torch.float32)
        center = pos_enc.pe.size(1) // 2 + 1
        self.register_buffer("pos_emb", pos_enc.pe[:, center - t:center + t - 1].detach().clone())
        self.xscale = float(pos_enc.xscale) if pos_enc.xscale else None
        left, right = (list(encoder.att_context_size) + [-1, -1])[:2]
        band = torch.ones(t, t, dtype=torch.bool)
        if left >= 0:
            band = band.triu(diagonal=-left)
        if right >= 0:
            band = band.tril(diagonal=right)
        self.register_buffer("band", band.unsqueeze(0).to(torch.float32))  # 1 = may attend

    @staticmethod
    def output_frames(encoder, mel_frames: int) -> int:
        with torch.no_grad():
            x = torch.zeros(1, mel_frames, encoder._feat_in)
            if isinstance(encoder.pre_encode, nn.Linear):
                return mel_frames
            out, _ = encoder.pre_encode(x=x, lengths=torch.tensor([mel_frames]))
        return int(out.shape[1])

    def attention(self, mha, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        h, d_k = mha.h, mha.d_k
        scale = 1.0 / float(mha.s_d_k)
        q = mha.linear_q(x).view(b, t, h, d_k) * scale
        k = mha.linear_k(x).view(b, t, h, d_k).transpose(1, 2)
        v = mha.linear_v(x).view(b, t, h, d_k).transpose(1, 2)
        p = mha.linear_pos(self.pos_emb).view(1, -1, h, d_k).transpose(1, 2)      # [1, h, 2t-1, d_k]
        q_u = (q + mha.pos_bias_u * scale).transpose(1, 2)
        q_v = (q + mha.pos_bias_v * scale).transpose(1, 2)
        matrix_ac = torch.matmul(q_u, k.transpose(-2, -1))                          # [b, h, t, t]
        matrix_bd = mha.rel_shift(torch.matmul(q_v, p.transpose(-2, -1)))[:, :, :, :t]
        scores = matrix_ac + matrix_bd
        keep4 = keep.unsqueeze(1)                                                   # [b, 1, t, t]
        scores = torch.where(keep4 > 0.5, scores, torch.full_like(scores, MASK_VALUE))
        attn = torch.softmax(scores, dim=-1) * keep4
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, t, h * d_k)
        return mha.linear_out(out)

    def layer(self, layer, x, keep, pad_mask):
        residual = x
        y = layer.feed_forward1(layer.norm_feed_forward1(x))
        residual = residual + y * layer.fc_factor
        y = self.attention(layer.self_attn, layer.norm_self_att(residual), keep)
        residual = residual + y
        y = layer.conv(layer.norm_conv(residual), pad_mask=pad_mask)
        residual = residual + y
        y = layer.feed_forward2(layer.norm_feed_forward2(residual))
        residual = residual + y * layer.fc_factor
        return layer.norm_out(residual)

    def forward(self, mel: torch.Tensor, mel_length: torch.Tensor):
        enc = self.encoder
        x = mel.transpose(1, 2)
        length = mel_length.to(torch.int32)
        if isinstance(enc.pre_encode, nn.Linear):
            x = enc.pre_encode(x)
        else:
            x, length = enc.pre_encode(x=x, lengths=length)
        length = length.to(torch.int32)
        if self.xscale:
            x = x * self.xscale
        index = torch.arange(self.frames, dtype=torch.int32).unsqueeze(0)
        valid = index < length.unsqueeze(1)                                      # [1, t]
        valid_f = valid.to(x.dtype)
        keep = valid_f.unsqueeze(2) * valid_f.unsqueeze(1) * self.band           # [1, t, t]
        pad_mask = ~valid
        for layer in enc.layers:
            x = self.layer(layer, x, keep, pad_mask)
        if enc.out_proj is not None:
            x = enc.out_proj(x)
        return x.transpose(1, 2), length


class MelEncoder(nn.Module):
    def __init__(self, frontend: _nemo.MelFrontend, encoder: EncoderWrapper):
        super().__init__()
        self.frontend = frontend
        self.encoder = encoder

    def forward(self, audio_signal, audio_length):
        mel, mel_length = self.frontend(audio_signal, audio_length)
        return self.encoder(mel, mel_length)


class PredictionNet(nn.Module):
    """One step of the RNN-T prediction network with explicit LSTM state."""

    def __init__(self, decoder):
        super().__init__()
        self.embed = decoder.prediction["embed"]
        self.lstm = decoder.prediction["dec_rnn"].lstm

    def forward(self, targets, target_length, h_in, c_in):
        y = self.embed(targets.to(torch.int32))                                   # [1, 1, H]
        g, (h, c) = self.lstm(y.transpose(0, 1), (h_in, c_in))                    # [1, 1, H]
        return g.permute(1, 2, 0), h, c


class JointLogits(nn.Module):
    """``joint_net(enc(f) + pred(g))`` without NeMo's log-softmax, frames x one decoder step."""

    def __init__(self, joint):
        super().__init__()
        self.enc = joint.enc
        self.pred = joint.pred
        self.joint_net = joint.joint_net

    def forward(self, encoder, decoder_step):
        f = self.enc(encoder.transpose(1, 2))                                    # [1, T, J]
        g = self.pred(decoder_step.transpose(1, 2))                              # [1, 1, J]
        return self.joint_net(f.unsqueeze(2) + g.unsqueeze(1))                   # [1, T, 1, C]


class JointDecision(nn.Module):
    """Token id (argmax over V+1), its softmax probability, and the duration value."""

    def __init__(self, joint, durations: list[int]):
        super().__init__()
        self.logits = JointLogits(joint)
        self.n_durations = len(durations)
        self.register_buffer("durations", torch.tensor(durations, dtype=torch.int32))

    def forward(self, encoder, decoder_step):
        logits = self.logits(encoder, decoder_step)[:, :, 0, :]                  # [1, T, C]
        token_logits = logits[:, :, :-self.n_durations]
        duration_logits = logits[:, :, -self.n_durations:]
        token_id = torch.argmax(token_logits, dim=-1, keepdim=True)
        probs = torch.softmax(token_logits, dim=-1)
        token_prob = torch.gather(probs, 2, token_id)
        duration_index = torch.argmax(duration_logits, dim=-1, keepdim=True)
        duration = self.durations[duration_index.reshape(-1)].reshape(duration_index.shape)
        return token_id.to(torch.int32), token_prob, duration.to(torch.int32)


