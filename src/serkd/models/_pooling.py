"""Pooling a conv feature map (B, C, F', T') into one vector per utterance, for students shaped for SER.

- ``global``: the mean over frequency and time (what Light-SERNet+ and timm's heads do; the students keep
  their own code for it, so ``global`` models are exactly today's).
- ``stats``: statistics pooling over **time only**: the mean and the standard deviation of every channel in
  every frequency band, so where in the spectrum the energy and its variation lie is kept. The frequency axis
  is first averaged into ``STATS_BANDS`` bands (the height 128 mel bins have after a /32 network; other
  inputs are mapped to the same number of bands, so the head's size does not depend on the feature kind).
- ``attentive``: attentive statistics pooling (Okabe et al., Interspeech 2018): a small attention network
  scores every frame (tanh bottleneck of ``ATTENTION_DIM``), and the mean and std are weighted by the
  frames' softmax weights, so silent or uninformative frames count less.

Output size: C for ``global``, 2 * C * STATS_BANDS otherwise (:func:`pooled_dim`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn

POOLING_CHOICES = ("global", "stats", "attentive")
STATS_BANDS = 4
ATTENTION_DIM = 64
STD_EPS = 1e-5  # std = sqrt(var + eps): the gradient of sqrt at a frame-constant channel stays finite


def check_pooling(pooling: str) -> str:
    if pooling not in POOLING_CHOICES:
        raise ValueError(f"pooling must be one of {', '.join(POOLING_CHOICES)}, not {pooling!r}")
    return pooling


def pooled_dim(channels: int, pooling: str) -> int:
    return channels if pooling == "global" else 2 * channels * STATS_BANDS


@lru_cache(maxsize=32)
def _band_matrix(height: int, bands: int) -> np.ndarray:
    """(bands, height) averaging weights of adaptive average pooling from ``height`` rows to ``bands`` (rows
    repeated when there are fewer rows than bands), as a constant a graph can hold (numpy: a cached tensor
    would outlive the fake tensors of an export trace)."""
    weights = np.zeros((bands, height), dtype=np.float32)
    for i in range(bands):
        start, stop = (i * height) // bands, -(-(i + 1) * height // bands)
        weights[i, start:stop] = 1.0 / (stop - start)
    return weights


class TimePooling(nn.Module):
    """(B, C, F', T') -> (B, pooled_dim): mean + std over time per channel and frequency band (``stats``),
    weighted by attention over frames (``attentive``)."""

    def __init__(self, channels: int, pooling: str = "stats"):
        super().__init__()
        self.pooling = check_pooling(pooling)
        if pooling == "global":
            raise ValueError("global pooling stays the student's own head")
        self.out_dim = pooled_dim(channels, pooling)
        if pooling == "attentive":
            width = channels * STATS_BANDS
            self.attention = nn.Sequential(nn.Conv1d(width, ATTENTION_DIM, 1), nn.Tanh(),
                                           nn.Conv1d(ATTENTION_DIM, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bands = torch.from_numpy(_band_matrix(x.shape[2], STATS_BANDS)).to(x.device, x.dtype)
        # (B, C, F', T') -> (B, C, bands, T') -> (B, C * bands, T')
        x = torch.einsum("kf,bcft->bckt", bands, x).flatten(1, 2)
        if self.pooling == "stats":
            mean = x.mean(-1)
            var = (x - mean.unsqueeze(-1)).square().mean(-1)
        else:
            weights = self.attention(x).softmax(dim=-1)  # (B, 1, T'): one weight per frame
            mean = (x * weights).sum(-1)
            var = ((x - mean.unsqueeze(-1)).square() * weights).sum(-1)
        return torch.cat([mean, torch.sqrt(var + STD_EPS)], dim=1)
