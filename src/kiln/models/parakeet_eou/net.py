"""Parakeet EOU internals: the NeMo side (restore checks, facts), the traceable
per-chunk wrappers, and NeMo's own cache-aware streaming as the faithfulness reference (host-side
RNNT greedy decoding and the chunk geometry: the torch-free ``pipeline`` and ``contract``). The declarative family is :mod:`kiln.models.parakeet_eou` (random checkpoints: ``checkpoint``).

Streaming geometry (all read from the checkpoint, see :func:`facts`):

- mel frames are ``hop`` samples apart; a chunk of ``chunk`` samples gives ``chunk / hop`` frames.
  NeMo's offline STFT is centred (frame k covers samples ``k*hop - n_fft/2 ..``), so the last frames
  of a chunk need up to ``n_fft/2`` samples of the *next* chunk. The streaming preprocessor instead
  carries ``stft_context`` raw samples of the previous chunks as state and emits, per chunk, the
  frames whose window is complete: streamed frame ``j`` is NeMo's offline frame ``j - mel_lag``.
  ``mel_lag`` is the larger of what the STFT needs (``ceil((n_fft - pad) / hop) - 1``, one frame
  for n_fft 512 / hop 160) and what puts fixed chunk boundaries on the causal subsampling grid
  (``sub - 1`` = 7 frames): with it, chunked streaming reproduces NeMo's offline encoder once past
  from the first frame (measured; see ``faithfulness``); with a lag of 1 every chunk is shifted by
  one mel frame against the grid and the outputs differ everywhere. The first ``mel_lag`` streamed
  frames precede the audio (offline frames -7..-1): they are not part of NeMo's stream.
- the encoder gets the chunk's mel frames plus ``pre_cache`` (the last ``pre_encode_cache_size``
  mel frames of the stream), drops ``drop_extra_pre_encoded`` subsampled frames and carries
  per-layer attention (``cache_last_channel``) and causal-convolution (``cache_last_time``) caches:
  NeMo's ``CacheAwareStreamingAudioBuffer`` + ``encoder.cache_aware_stream_step`` after its first
  step, the fixed-shape form every chunk can share. The first step of a session (caches zero,
  ``cache_last_channel_len`` 0) is NeMo's short first step: the pre-encode cache and the ``mel_lag``
  frames are masked as NeMo's causal padding (:class:`SessionStartSubsampling`), so a session's
  tokens and ``<EOU>`` chunks are NeMo's from chunk 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from kiln.foundation.errors import ModelError
from kiln.export.rewrites import ConvSTFT
from kiln.models import _nemo
from kiln.models.parakeet_eou.checkpoint import EOB_STRING, EOU_STRING, token_id as _token_id


@dataclass
class EOUSource:
    model: Any        # nemo EncDecRNNTBPEModel (or the EOU subclass), eval mode
    path: str

    @property
    def encoder(self):
        return self.model.encoder

    @property
    def featurizer(self):
        return _nemo.featurizer_of(self.model.preprocessor)

    @property
    def lstm(self) -> nn.LSTM:
        return self.model.decoder.prediction["dec_rnn"].lstm


def streaming_problems(encoder) -> list[str]:
    """Why ``encoder`` cannot run cache-aware streaming with fixed-shape chunks (empty when it can)."""
    problems = []
    if not hasattr(encoder, "cache_aware_stream_step") or not hasattr(encoder, "streaming_cfg"):
        return [f"{type(encoder).__name__} is not a NeMo StreamingEncoder"]
    att = list(getattr(encoder, "att_context_size", [-1, -1]))
    style = getattr(encoder, "att_context_style", None)
    if att[:2] == [-1, -1]:
        problems.append(f"full-context attention (att_context_size={att}): no limited left context "
                        "to cache and no chunking")
    else:
        if att[0] < 0:
            problems.append(f"unlimited left attention context (att_context_size={att}): the "
                            "attention cache would grow without bound")
        if style != "chunked_limited":
            problems.append(f"att_context_style={style!r} (cache-aware chunks need 'chunked_limited')")
    conv = list(getattr(encoder, "conv_context_size", [0, 0]))
    if len(conv) == 2 and conv[1] != 0:
        problems.append(f"non-causal convolutions (conv_context_size={conv}; streaming needs 'causal')")
    pre = getattr(encoder, "pre_encode", None)
    if pre is not None and not isinstance(pre, nn.Linear) and not getattr(pre, "is_causal", False):
        problems.append("non-causal downsampling (causal_downsampling: false)")
    if getattr(encoder, "self_attention_model", None) != "rel_pos":
        problems.append(f"self_attention_model={getattr(encoder, 'self_attention_model', None)!r} "
                        "(kiln streams rel_pos attention)")
    return problems


def check_source(model, path: str) -> None:
    """Refuse a checkpoint that is not a cache-aware RNNT model with an EOU token, naming the file
    and everything missing, before any wrapper is built."""
    if not hasattr(model, "joint") or not hasattr(model, "decoder") or not hasattr(model, "encoder"):
        raise ModelError(f"{path}: {type(model).__name__} is not a transducer (RNNT) model")
    problems = streaming_problems(model.encoder)
    if problems:
        raise ModelError(f"{path}: the encoder is not cache-aware, so it cannot be exported as a "
                         f"streaming encoder: {'; '.join(problems)}")
    if int(getattr(model.joint, "num_extra_outputs", 0) or 0):
        raise ModelError(f"{path}: the joint has {model.joint.num_extra_outputs} extra outputs (a TDT "
                         "model); the parakeet_eou family exports plain RNNT joints")
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ModelError(f"{path}: the model has no tokenizer, so no {EOU_STRING} token id")
    if _token_id(tokenizer, EOU_STRING) is None:
        raise ModelError(f"{path}: the vocabulary has no end-of-utterance token {EOU_STRING!r} "
                         f"({tokenizer.vocab_size} pieces); the parakeet_eou family needs a model "
                         "trained to emit it")
    featurizer = _nemo.featurizer_of(model.preprocessor)
    if featurizer.normalize not in (None, "NA", "none", False):
        raise ModelError(f"{path}: the preprocessor normalises features ({featurizer.normalize!r}); a "
                         "chunk-by-chunk front end needs un-normalised log-mel features")


def load(path: str | Path) -> EOUSource:
    model = _nemo.restore_nemo(path)
    check_source(model, str(path))
    return EOUSource(model=model, path=str(path))


def _cfg_int(value, name: str, path: str) -> int:
    if value is None:
        raise ModelError(f"{path}: the checkpoint config has no {name}")
    return int(value)


def facts(source: EOUSource) -> dict:
    """What later jobs need, read from the checkpoint: mel geometry, streaming config (NeMo's
    ``setup_streaming_params`` at the model's native chunk), cache shapes, vocabulary and ids."""
    enc, f, model, path = source.encoder, source.featurizer, source.model, source.path
    with _nemo.quiet_nemo():
        enc.setup_streaming_params()
    cfg = enc.streaming_cfg
    att = [int(a) for a in enc.att_context_size]
    native = att[1] + 1
    pre_cache = cfg.pre_encode_cache_size
    pre_cache = int(pre_cache[1] if isinstance(pre_cache, (list, tuple)) else pre_cache)
    n_fft, hop = int(f.n_fft), int(f.hop_length)
    stft_pad = (n_fft - hop) // 2 if getattr(f, "exact_pad", False) else n_fft // 2
    # frames the streamed mel trails NeMo's centred offline mel: at least what the STFT's right
    # half-window needs, and exactly what puts chunk boundaries on the causal subsampling's grid
    # (NeMo's first streaming chunk is chunk_size[0] = chunk_size[1] - (sub - 1) frames), so
    # that fixed-size chunks reproduce the offline encoder once past the start
    stft_lag = math.ceil((n_fft - stft_pad) / hop) - 1
    sizes = cfg.chunk_size
    grid_lag = int(sizes[1] - sizes[0]) if isinstance(sizes, (list, tuple)) else 0
    mel_lag = max(stft_lag, grid_lag)
    tokenizer = model.tokenizer
    lstm = source.lstm
    greedy = (model.cfg.get("decoding") or {}).get("greedy") or {}
    max_symbols = greedy.get("max_symbols")
    vocab_size = int(model.decoder.vocab_size)
    return {
        "sample_rate": _cfg_int(model.cfg.get("sample_rate") or getattr(f, "sample_rate", None),
                                "sample_rate", path),
        "n_mels": int(f.fb.shape[1]), "n_fft": n_fft, "hop_length": hop, "stft_pad": stft_pad,
        "preemph": None if f.preemph is None else float(f.preemph),
        "mel_lag_frames": mel_lag,
        # raw samples the preprocessor carries: the window context (stft_pad + mel_lag*hop) plus one
        # sample for the pre-emphasis of the chunk's first sample
        "stft_context": stft_pad + mel_lag * hop + 1,
        "subsampling_factor": int(enc.subsampling_factor),
        "att_context_size": att, "att_context_style": enc.att_context_style,
        "native_chunk_frames": native,
        "last_channel_cache_size": int(cfg.last_channel_cache_size),
        "conv_cache_size": int(enc.conv_context_size[0]),
        "pre_encode_cache_size": pre_cache,
        "drop_extra_pre_encoded": int(cfg.drop_extra_pre_encoded),
        "d_model": int(enc.d_model), "n_layers": len(enc.layers),
        "vocab_size": vocab_size, "blank_id": int(model.decoder.blank_idx),
        "eou_id": _token_id(tokenizer, EOU_STRING), "eob_id": _token_id(tokenizer, EOB_STRING),
        "num_classes_with_blank": int(model.joint.num_classes_with_blank),
        "pred_hidden": int(model.decoder.pred_hidden), "pred_rnn_layers": int(lstm.num_layers),
        "lstm_hidden": int(lstm.hidden_size), "lstm_proj": int(lstm.proj_size or lstm.hidden_size),
        "max_symbols": _cfg_int(max_symbols, "decoding.greedy.max_symbols", path),
        "vocabulary": [str(t) for t in tokenizer.ids_to_tokens(list(range(vocab_size)))],
        "synthetic": bool((model.cfg.get("kiln") or {}).get("synthetic", False)),
    }


class StreamingMel(nn.Module):
    """NeMo's log-mel front end for one chunk, the STFT's left context carried as explicit state.

    ``audio_signal [1, N]``, ``audio_context [1, C]`` (the last C raw samples of the stream, zeros
    at the start) -> ``mel [1, n_mels, N/hop]`` (un-normalised), ``new_audio_context [1, C]``.
    Pre-emphasis, windowed-DFT-as-conv1d, power, mel filterbank and log guard are NeMo's (via
    :class:`kiln.models._nemo.MelFrontend`'s STFT basis and filterbank); only the framing differs: no
    centre padding, the context supplies the left half-window.
    """

    def __init__(self, featurizer, chunk_samples: int, context: int):
        super().__init__()
        front = _nemo.MelFrontend(featurizer, chunk_samples)
        if front.normalize:
            raise ModelError("preprocessor: per-feature normalisation cannot run chunk by chunk")
        self.hop, self.n_fft, self.n_bins = front.hop, front.n_fft, front.n_bins
        self.chunk = int(chunk_samples)
        self.context = int(context)
        self.frames = self.chunk // self.hop
        self.preemph = front.preemph
        self.mag_power, self.log = front.mag_power, front.log
        self.log_zero_guard_type, self.log_zero_guard_value = front.log_zero_guard_type, front.log_zero_guard_value
        # the front end's STFT basis (kiln.export.rewrites.ConvSTFT), unpadded: the carried context
        # supplies the left half-window
        self.stft = ConvSTFT(self.n_fft, self.hop, pad=(0, 0), basis=front.stft.basis)
        self.register_buffer("fb", front.fb.clone())
        # the last window must end inside [context + chunk]
        self.span = span = (self.frames - 1) * self.hop + self.n_fft
        if span > self.context - 1 + self.chunk:
            raise ModelError(f"preprocessor: a context of {context} samples is too short for {self.frames} "
                             f"frames of {self.n_fft} samples per {self.chunk}-sample chunk")

    def forward(self, audio_signal: torch.Tensor, audio_context: torch.Tensor):
        x = torch.cat([audio_context, audio_signal], dim=1)                        # [1, C + N]
        new_context = x[:, x.shape[1] - self.context:]
        span = x[:, :self.span + 1]           # the samples this chunk's complete windows cover
        if self.preemph is not None:
            span = span[:, 1:] - self.preemph * span[:, :-1]
        else:
            span = span[:, 1:]
        real, imag = self.stft(span)                                               # [1, bins, frames]
        power = real * real + imag * imag
        if self.mag_power != 2.0:
            power = torch.pow(torch.sqrt(power), self.mag_power)
        mel = torch.matmul(self.fb, power)
        if self.log:
            if self.log_zero_guard_type == "add":
                mel = torch.log(mel + self.log_zero_guard_value)
            else:
                mel = torch.log(torch.clamp(mel, min=self.log_zero_guard_value))
        return mel, new_context


class SessionStartSubsampling(nn.Module):
    """NeMo's causal convolutional subsampling (``ConvSubsampling`` with its length-masked
    ``MaskedConvSequential``) over ``[pre_cache, chunk]``, where the first ``start`` frames may be
    declared *before the stream*: they are zeroed before every strided convolution, exactly as
    NeMo's causal left padding zeroes what precedes its first streaming step.

    NeMo's session starts with a short step (``chunk_size[0]`` mel frames, no pre-encode cache,
    nothing dropped after subsampling); every later step is ``pre_cache + chunk`` frames with
    ``drop_extra_pre_encoded`` subsampled frames dropped. kiln's fixed-shape step covers both: at
    the start the ``pre_cache`` frames and the preprocessor's ``mel_lag`` frames (offline frames
    before frame 0) are masked, which is ``drop_extra_pre_encoded * subsampling`` frames, so after
    each stride-2 level the masked prefix is still whole frames and the dropped frames are exactly
    the masked ones. ``start = 0`` is NeMo's own ``pre_encode`` op for op.
    """

    def __init__(self, pre_encode, start_frames: int, drop: int):
        super().__init__()
        from nemo.collections.asr.parts.submodules.subsampling import ConvSubsampling

        if not isinstance(pre_encode, ConvSubsampling) or not pre_encode.conv2d_subsampling:
            raise ModelError(f"streaming encoder: the session start is exported for 2-D convolutional "
                             f"subsampling only, not {type(pre_encode).__name__}")
        self.pre_encode = pre_encode
        self.start_frames = int(start_frames)
        strides = [int(layer.stride[0]) for layer in pre_encode.conv if getattr(layer, "stride", (1, 1)) != (1, 1)]
        total = int(np.prod(strides)) if strides else 1
        if self.start_frames % total or self.start_frames // total != int(drop):
            raise ModelError(f"streaming encoder: {start_frames} pre-stream mel frames at the session start "
                             f"(pre-encode cache + preprocessor lag) are not the {drop} dropped subsampled "
                             f"frames x {total}; the first chunk cannot be made NeMo's first step")

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, start: torch.Tensor):
        """``x [1, T, n_mels]``, ``lengths [1]`` (valid frames from the left), ``start [1]`` (frames
        before the stream, 0 or ``start_frames``) -> ``(features [1, T', d], lengths [1])``."""
        from nemo.collections.asr.parts.submodules.subsampling import calculate_conv_output_size

        x = x.unsqueeze(1)                                                      # [1, 1, T, F]
        current = lengths.clone().float()
        begin = start.clone().float()

        def mask_of(tensor):
            steps = torch.arange(tensor.shape[2], device=tensor.device).unsqueeze(0).float()
            keep = (steps < current.unsqueeze(1)).float() * (steps >= begin.unsqueeze(1)).float()
            return keep[:, None, :, None]                                       # [1, 1, T, 1]

        mask = mask_of(x)
        for layer in self.pre_encode.conv:
            x = layer(x * mask)
            if getattr(layer, "stride", (1, 1)) != (1, 1):
                padding = (layer._left_padding, layer._right_padding) if hasattr(layer, "_left_padding") \
                    else layer.padding
                current = calculate_conv_output_size(current, layer.kernel_size[0], layer.stride[0], padding)
                begin = torch.div(begin, layer.stride[0], rounding_mode="floor")
                mask = mask_of(x)
        x = x * mask
        b, c, t, f = x.size()
        return self.pre_encode.out(x.transpose(1, 2).reshape(b, t, -1)), current.long()


class StreamingEncoderStep(nn.Module):
    """One chunk of NeMo's cache-aware streaming step with every cache explicit.

    ``audio_signal [1, n_mels, T]``, ``audio_length [1]`` int32, ``pre_cache [1, n_mels, P]``,
    ``cache_last_channel [L, 1, C, d]``, ``cache_last_time [L, 1, d, K]``, ``cache_last_channel_len
    [1]`` int32 -> ``encoded_output [1, d, T/sub]``, ``encoded_length [1]`` int32, and the four
    ``new_*`` caches. The body is NeMo's own ``ConformerEncoder.forward_internal`` +
    ``streaming_post_process`` (no re-implementation), called directly so ``@typecheck`` stays out
    of the trace, on ``pre_cache`` + chunk as ``CacheAwareStreamingAudioBuffer`` builds every step
    after the first.

    The session start is NeMo's: ``cache_last_channel_len == 0`` (nothing streamed yet, the state
    every session starts from) makes this step NeMo's first one, whose input is the chunk's frames
    from the preprocessor's ``mel_lag`` on (offline frame 0) with no pre-encode cache
    (:class:`SessionStartSubsampling`); ``pre_cache`` and the first ``mel_lag`` frames are then
    ignored whatever they hold.
    """

    def __init__(self, encoder, chunk_frames: int, mel_lag: int):
        super().__init__()
        self.encoder = encoder
        self.chunk_frames = int(chunk_frames)
        self._configure()
        cfg = encoder.streaming_cfg
        pre = cfg.pre_encode_cache_size
        self.pre_cache = int(pre[1] if isinstance(pre, (list, tuple)) else pre)
        self.drop = int(cfg.drop_extra_pre_encoded)
        if int(cfg.last_channel_cache_size) < 1:
            raise ModelError("streaming encoder: no left attention context, so cache_last_channel_len "
                             "cannot mark the session start")
        self.subsampling = SessionStartSubsampling(encoder.pre_encode, self.pre_cache + int(mel_lag), self.drop)
        # positional encodings long enough for cache + chunk, made once here (forward must not resize)
        encoder.set_max_audio_length(max(encoder.max_audio_length, cfg.last_channel_cache_size + 4 * chunk_frames + 16))

    def _configure(self) -> None:
        """NeMo keeps the streaming config on the (shared) encoder: wrappers of several chunk sizes
        of one source each put their own back before running."""
        if getattr(self, "_cfg", None) is not None and self.encoder.streaming_cfg is self._cfg:
            return
        with _nemo.quiet_nemo():
            self.encoder.setup_streaming_params(chunk_size=self.chunk_frames, shift_size=self.chunk_frames)
        self._cfg = self.encoder.streaming_cfg

    def forward(self, audio_signal, audio_length, pre_cache, cache_last_channel, cache_last_time,
                cache_last_channel_len):
        self._configure()
        x = torch.cat([pre_cache, audio_signal], dim=2)
        new_pre_cache = x[:, :, x.shape[2] - self.pre_cache:]
        length = audio_length.to(torch.int64) + self.pre_cache
        channel_len = cache_last_channel_len.to(torch.int64)
        start = (channel_len == 0).to(torch.int64) * self.subsampling.start_frames
        features, length = self.subsampling(x.transpose(1, 2), length, start)
        features = features[:, self.drop:, :]
        length = (length - self.drop).clamp(min=0)
        rets = self.encoder.forward_internal(
            features, length, cache_last_channel=cache_last_channel, cache_last_time=cache_last_time,
            cache_last_channel_len=channel_len, bypass_pre_encode=True)
        encoded, encoded_len, channel, time, channel_len = self.encoder.streaming_post_process(
            rets, keep_all_outputs=False)
        return (encoded, encoded_len.to(torch.int32), new_pre_cache, channel, time,
                channel_len.to(torch.int32))


class RNNTJointDecision(nn.Module):
    """``joint_net(enc(f) + pred(g))`` for one frame -> argmax token id over V+1 (blank = V) and its
    softmax probability. No durations (RNNT, not TDT); NeMo's CPU log-softmax path is skipped."""

    def __init__(self, joint):
        super().__init__()
        self.enc, self.pred, self.joint_net = joint.enc, joint.pred, joint.joint_net

    def forward(self, encoder_step, decoder_step):
        f = self.enc(encoder_step.transpose(1, 2))                                # [1, 1, J]
        g = self.pred(decoder_step.transpose(1, 2))                               # [1, 1, J]
        logits = self.joint_net(f + g)                                            # [1, 1, V+1]
        token_id = torch.argmax(logits, dim=-1, keepdim=True)
        probs = torch.softmax(logits, dim=-1)
        return token_id.to(torch.int32), torch.gather(probs, 2, token_id)


def nemo_streaming(source: EOUSource, mel: np.ndarray, chunk_frames: int) -> list[dict[str, np.ndarray]]:
    """Stream ``mel [1, n_mels, T]`` (offline mel frames from frame 0: kiln's streamed mel without
    its ``mel_lag`` leading frames) through NeMo's ``CacheAwareStreamingAudioBuffer`` (its default
    session: a first step of ``chunk_size[0]`` frames with no pre-encode cache, then ``pre_cache``
    + chunk) and ``encoder.cache_aware_stream_step`` with ``drop_extra_pre_encoded`` 0 on the first
    step (NeMo's ``calc_drop_extra_pre_encoded``); per step the encoder output and every cache."""
    from nemo.collections.asr.parts.utils.streaming_utils import CacheAwareStreamingAudioBuffer

    enc = source.encoder
    with _nemo.quiet_nemo(), _nemo.typecheck_disabled(), torch.no_grad():
        enc.setup_streaming_params(chunk_size=chunk_frames, shift_size=chunk_frames)
        buffer = CacheAwareStreamingAudioBuffer(model=source.model)
        buffer.append_processed_signal(torch.from_numpy(np.ascontiguousarray(mel, np.float32)))
        channel, time, channel_len = enc.get_initial_cache_state(batch_size=1)
        steps = []
        for step, (chunk, length) in enumerate(buffer):
            encoded, encoded_len, channel, time, channel_len = enc.cache_aware_stream_step(
                processed_signal=chunk, processed_signal_length=length, cache_last_channel=channel,
                cache_last_time=time, cache_last_channel_len=channel_len, keep_all_outputs=False,
                drop_extra_pre_encoded=0 if step == 0 else enc.streaming_cfg.drop_extra_pre_encoded)
            steps.append({"chunk": chunk.numpy().copy(), "encoded_output": encoded.numpy().copy(),
                          "encoded_length": encoded_len.numpy().astype(np.int32),
                          "new_cache_last_channel": channel.numpy().copy(),
                          "new_cache_last_time": time.numpy().copy(),
                          "new_cache_last_channel_len": channel_len.numpy().astype(np.int32)})
    return steps


def nemo_session(source: EOUSource, audio: np.ndarray, chunk_frames: int) -> dict:
    """A live session as NeMo runs it, end to end: ``CacheAwareStreamingAudioBuffer`` (its own
    preprocessor, dither off; its default first step of ``chunk_size[0]`` mel frames with no
    pre-encode cache) and ``model.conformer_stream_step`` with NeMo's greedy RNNT decoding,
    hypotheses carried across steps and ``drop_extra_pre_encoded`` 0 on the first step, as NeMo's
    ``speech_to_text_cache_aware_streaming_infer.py`` does. Per step: the encoder output and the
    tokens NeMo emitted in that step."""
    from nemo.collections.asr.parts.utils.streaming_utils import CacheAwareStreamingAudioBuffer

    model, enc = source.model, source.encoder
    with _nemo.quiet_nemo(), torch.no_grad():
        enc.setup_streaming_params(chunk_size=chunk_frames, shift_size=chunk_frames)
        buffer = CacheAwareStreamingAudioBuffer(model=model)
        buffer.append_audio(np.ascontiguousarray(audio, np.float32))
        channel, time, channel_len = enc.get_initial_cache_state(batch_size=1)
        hypotheses, predictions, emitted = None, None, 0
        encoded_steps, tokens_per_step = [], []
        with _nemo.typecheck_disabled():
            for step, (chunk, length) in enumerate(buffer):
                # the encoder alone first (the same call conformer_stream_step makes), to keep its output
                drop = 0 if step == 0 else enc.streaming_cfg.drop_extra_pre_encoded
                encoded, _, _, _, _ = enc.cache_aware_stream_step(
                    processed_signal=chunk, processed_signal_length=length, cache_last_channel=channel,
                    cache_last_time=time, cache_last_channel_len=channel_len,
                    keep_all_outputs=buffer.is_buffer_empty(), drop_extra_pre_encoded=drop)
                (predictions, _, channel, time, channel_len, hypotheses) = model.conformer_stream_step(
                    processed_signal=chunk, processed_signal_length=length, cache_last_channel=channel,
                    cache_last_time=time, cache_last_channel_len=channel_len,
                    keep_all_outputs=buffer.is_buffer_empty(), previous_hypotheses=hypotheses,
                    previous_pred_out=predictions, drop_extra_pre_encoded=drop, return_transcription=True)
                sequence = [int(t) for t in hypotheses[0].y_sequence]
                tokens_per_step.append(sequence[emitted:])
                emitted = len(sequence)
                encoded_steps.append(encoded.numpy().copy())
    return {"encoded": encoded_steps, "tokens_per_chunk": tokens_per_step}


def nemo_offline(source: EOUSource, mel: np.ndarray) -> np.ndarray:
    """NeMo's full-utterance encoder forward (its trained limited-context masks) on ``mel``."""
    enc = source.encoder
    with _nemo.quiet_nemo(), _nemo.typecheck_disabled(), torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(mel, np.float32))
        encoded, length = enc(audio_signal=x, length=torch.tensor([x.shape[-1]]))
    return encoded.numpy()[:, :, :int(length[0])]


def nemo_offline_mel(source: EOUSource, audio: np.ndarray) -> np.ndarray:
    """NeMo's own preprocessor on the whole utterance (eval mode: no dither), valid frames only."""
    with _nemo.quiet_nemo(), torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(audio, np.float32))[None]
        mel, length = source.model.preprocessor(input_signal=x, length=torch.tensor([x.shape[1]]))
    return mel.numpy()[:, :, :int(length[0])]


def torch_predict(module: nn.Module, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> Callable:
    def predict(feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            outs = module(*(torch.from_numpy(np.ascontiguousarray(feed[n])) for n in inputs))
        return {n: o.numpy().copy() for n, o in zip(outputs, outs)}
    return predict


def max_abs(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ModelError(f"shape mismatch {a.shape} vs {b.shape}")
    return float(np.max(np.abs(a - b))) if a.size else 0.0
