"""A tiny network a user might bring, for the ``plain`` family's tests (importable by adding
``tests/helpers`` to PYTHONPATH, as a user's own package would be installed): log-mel frames in,
a unit-length embedding and the ReLU'd frame features out. Its weights are random (seeded) and
saved by the test as a state dict, which kiln loads (``network.state_dict: true``)."""

from __future__ import annotations

import torch
from torch import nn


class TinyEncoder(nn.Module):
    def __init__(self, bands: int = 40, dim: int = 64):
        super().__init__()
        self.frame = nn.Conv1d(bands, dim, kernel_size=3, padding=1)
        self.project = nn.Linear(dim, dim)

    def forward(self, mels: torch.Tensor):
        frames = torch.relu(self.frame(mels))                    # exact zeros: max_rel's old trap
        pooled = self.project(frames.mean(dim=-1))
        embedding = pooled / pooled.norm(dim=-1, keepdim=True)    # unit vectors: cosine, not L2
        return embedding, frames


def random_state_dict(seed: int = 0, **kwargs) -> dict:
    torch.manual_seed(seed)
    return TinyEncoder(**kwargs).state_dict()


class EnergyEncoder(TinyEncoder):
    """TinyEncoder normalised through an explicit energy (sum of squares, then rsqrt): on loud
    input the energy exceeds fp16's maximum (65504) although every output is small, the kind of
    intermediate overflow kiln's fp16 report must name (tests/scenarios/test_fp16_workflow.py)."""

    def forward(self, mels: torch.Tensor):
        frames = torch.relu(self.frame(mels))
        pooled = self.project(frames.mean(dim=-1))
        energy = (pooled * pooled).sum(dim=-1, keepdim=True)
        return pooled * torch.rsqrt(energy), frames
