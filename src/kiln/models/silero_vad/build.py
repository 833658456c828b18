"""Silero VAD's build part: the 16 kHz network rebuilt as a plain ``nn.Module`` from the shipped TorchScript's weights.

The shipped ``silero_vad.jit`` cannot be converted directly (scripted control flow, hidden state,
in-place context buffers). This module re-expresses its 16 kHz network with the same torch ops in
the same order, so it is bit-identical to ``silero_vad.load_silero_vad()``, and makes the state
explicit:

- STFT as a strided conv with the stored basis (``kiln.export.rewrites.ConvSTFT``: reflect-pad 64
  on the right, hop 128, 129 bins, real and imaginary parts split), magnitude ``sqrt(re² + im²)``;
- four conv encoder blocks (kernel 3, padding 1, strides 1/2/2/1) with ReLU;
- an LSTM cell (128 units) whose ``hidden_state``/``cell_state`` are inputs and outputs;
- ReLU, a 1x1 conv and a sigmoid: the speech probability.

Components (config option ``steps``): ``unified`` runs one 512-sample step on 64 context + 512 new
samples; ``unified_256ms`` runs eight steps on 64 + 4096 samples, carrying the state, and combines
the eight probabilities by noisy-OR, ``1 - prod(1 - p_i)`` (what the consuming runtime expects).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kiln.foundation.errors import SourceError
from kiln.export.rewrites import ConvSTFT
from kiln.models.silero_vad.contract import CHUNK_SAMPLES, CONTEXT_SAMPLES, SAMPLE_RATE, STATE_SIZE, steps_of
from kiln.sources import SourceRecord

HOP_LENGTH = 128
FILTER_LENGTH = 256
STFT_PAD = 64
ENCODER_STRIDES = (1, 2, 2, 1)
PREFIX = "_model."  # the 16 kHz network inside the shipped TorchScript (``_model_8k`` is 8 kHz)

STATE_KEYS = (
    "stft.forward_basis_buffer",
    *(f"encoder.{i}.reparam_conv.{p}" for i in range(4) for p in ("weight", "bias")),
    "decoder.rnn.weight_ih", "decoder.rnn.weight_hh", "decoder.rnn.bias_ih", "decoder.rnn.bias_hh",
    "decoder.decoder.2.weight", "decoder.decoder.2.bias",
)


class SileroVADNet(nn.Module):
    """One 512-sample step of the 16 kHz Silero VAD network with explicit LSTM state."""

    def __init__(self, weights: dict[str, torch.Tensor]):
        super().__init__()
        # the shipped STFT basis (real rows, then imaginary rows) as a strided conv, reflect-padded
        # 64 samples on the right only, as the TorchScript does
        self.stft = ConvSTFT(FILTER_LENGTH, HOP_LENGTH, pad=(0, STFT_PAD), pad_mode="reflect",
                             basis=weights["stft.forward_basis_buffer"])
        self.encoder_weights = nn.ParameterList()
        self.encoder_biases = nn.ParameterList()
        for i in range(4):
            self.encoder_weights.append(nn.Parameter(weights[f"encoder.{i}.reparam_conv.weight"].clone()))
            self.encoder_biases.append(nn.Parameter(weights[f"encoder.{i}.reparam_conv.bias"].clone()))
        self.weight_ih = nn.Parameter(weights["decoder.rnn.weight_ih"].clone())
        self.weight_hh = nn.Parameter(weights["decoder.rnn.weight_hh"].clone())
        self.bias_ih = nn.Parameter(weights["decoder.rnn.bias_ih"].clone())
        self.bias_hh = nn.Parameter(weights["decoder.rnn.bias_hh"].clone())
        self.out_weight = nn.Parameter(weights["decoder.decoder.2.weight"].clone())
        self.out_bias = nn.Parameter(weights["decoder.decoder.2.bias"].clone())
        self.requires_grad_(False)
        self.eval()

    def stft_magnitude(self, audio: torch.Tensor) -> torch.Tensor:
        return self.stft.magnitude(audio)

    def forward(self, audio: torch.Tensor, hidden_state: torch.Tensor, cell_state: torch.Tensor):
        """``audio [1, 576]`` (64 context + 512 new samples) -> probability ``[1, 1, 1]``, new state."""
        x = self.stft_magnitude(audio)
        for weight, bias, stride in zip(self.encoder_weights, self.encoder_biases, ENCODER_STRIDES):
            x = F.relu(F.conv1d(x, weight, bias, stride=stride, padding=1))
        x = x.squeeze(-1)
        h, c = torch.lstm_cell(x, (hidden_state, cell_state), self.weight_ih, self.weight_hh,
                               self.bias_ih, self.bias_hh)
        y = F.relu(h.unsqueeze(-1))
        probability = torch.sigmoid(F.conv1d(y, self.out_weight, self.out_bias))
        return probability, h, c


class SileroVADWindow(nn.Module):
    """``steps`` consecutive 512-sample steps over ``64 + steps * 512`` samples, state carried,
    probabilities combined by noisy-OR (one step: the probability itself)."""

    def __init__(self, net: SileroVADNet, steps: int):
        super().__init__()
        self.net = net
        self.steps = steps

    def forward(self, audio_input: torch.Tensor, hidden_state: torch.Tensor, cell_state: torch.Tensor):
        h, c = hidden_state, cell_state
        if self.steps == 1:
            probability, h, c = self.net(audio_input, h, c)
            return probability, h, c
        # noisy-OR: the window is speech unless every step is non-speech
        none_speech = torch.ones(1, 1, 1)
        for step in range(self.steps):
            start = step * CHUNK_SAMPLES
            window = audio_input[:, start:start + CONTEXT_SAMPLES + CHUNK_SAMPLES]
            probability, h, c = self.net(window, h, c)
            none_speech = none_speech * (1.0 - probability)
        return 1.0 - none_speech, h, c


def load_weights(path) -> dict[str, torch.Tensor]:
    """The 16 kHz network's tensors from the shipped TorchScript file."""
    try:
        scripted = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError/ValueError subclasses for bad archives
        raise SourceError(f"{path}: not a loadable TorchScript archive: {str(exc).splitlines()[0]}") from exc
    state = scripted.state_dict()
    weights = {}
    for key in STATE_KEYS:
        try:
            weights[key] = state[PREFIX + key].detach().to(torch.float32)
        except KeyError:
            raise SourceError(f"{path}: missing tensor '{PREFIX + key}'; not a Silero VAD v5/v6 "
                              "checkpoint") from None
    return weights


def load(record: SourceRecord) -> SileroVADNet:
    return SileroVADNet(load_weights(record.file("checkpoint")))


def facts(net: SileroVADNet) -> dict:
    return {"sample_rate": SAMPLE_RATE, "context_samples": CONTEXT_SAMPLES, "chunk_samples": CHUNK_SAMPLES,
            "state_size": STATE_SIZE}


def window(net: SileroVADNet, component, facts) -> nn.Module:
    """``steps`` LSTM steps over one window (config option ``steps``)."""
    return SileroVADWindow(net, steps_of(component)).eval()
