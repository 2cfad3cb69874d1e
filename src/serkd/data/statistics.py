"""Feature statistics per bin over real frames: the numbers every normalisation is made of (numpy only, so a
deployment that computes a speaker's statistics with onnxruntime needs neither torch nor librosa).

:class:`Moments` are sums (count, per-bin sum and sum of squares) that add up over utterances and speakers;
:class:`Statistics` the mean and ``std = sqrt(var + VAR_EPS)`` they give, as applied: ``(x - mean) / std``.
The choices of normalisation live here too (:mod:`serkd.data.normalize` applies them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serkd.errors import SerkdError

NORMALIZE_CHOICES = ("utterance", "speaker", "corpus", "none")
VAR_EPS = 1e-6  # std = sqrt(var + VAR_EPS): a bin that never changes is divided by 1e-3, not by zero


@dataclass
class Moments:
    """Sums over real frames per feature bin: what means and variances of any union of utterances need."""

    count: int
    total: np.ndarray  # (F,) float64
    squares: np.ndarray  # (F,) float64

    @classmethod
    def zero(cls, bins: int) -> Moments:
        return cls(0, np.zeros(bins), np.zeros(bins))

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.count + other.count, self.total + other.total, self.squares + other.squares)

    def statistics(self) -> Statistics:
        if self.count == 0:
            raise SerkdError("no real frames to take feature statistics from")
        mean = self.total / self.count
        var = np.maximum(self.squares / self.count - mean**2, 0.0)
        return Statistics(mean.astype(np.float32), np.sqrt(var + VAR_EPS).astype(np.float32), self.count)


@dataclass
class Statistics:
    """Per-bin mean and std (float32, as applied) and how many real frames they came from."""

    mean: np.ndarray
    std: np.ndarray
    frames: int

    def to_json(self) -> dict:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std], "frames": int(self.frames)}

    @classmethod
    def from_json(cls, data: dict) -> Statistics:
        return cls(np.asarray(data["mean"], dtype=np.float32), np.asarray(data["std"], dtype=np.float32),
                   int(data.get("frames", 0)))
