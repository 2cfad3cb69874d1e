"""Training-time augmentation of cached feature batches (B, 1, F, T): where the student recipe sits between
the feature cache and the loss. Everything here acts on a whole batch at once (no Python loop over
examples) and draws from its own ``torch.Generator``, so the seed recipe (no augmentation) consumes no
random numbers and stays bit-identical.

- :func:`time_shift`: a random circular shift of each example along time. Random crops of the
  waveform would need features computed on a longer window than the one cached (a second cache, and
  more audio per utterance); rolling the cached centre crop costs nothing, keeps every frame, and
  evaluation sees the unshifted centre crop exactly as before. Emotion is carried by the utterance
  as a whole, so a rolled matrix keeps its label; the wrap-around seam is one more edge the
  convolutions learn to ignore.
- :func:`spec_mask`: SpecAugment frequency and time masks (Park et al., 2019), each example its own
  bands, filled with that example's mean value: mel features are dB relative to the utterance's
  maximum (0 is the loudest bin, -80 silence), so zero would paint a loud band, while the mean keeps
  the batch statistics BatchNorm sees.
- :func:`mixup`: convex combinations of pairs within a batch (Zhang et al., 2018), one weight per
  batch drawn from Beta(alpha, alpha); the teacher's targets are mixed the same way by
  :func:`mix_teacher` (in probability space, see there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentOptions:
    """What :func:`augment` does; every field at its default does nothing (the seed recipe)."""

    time_shift: float = 0.0  # largest circular shift, as a fraction of the frames
    freq_masks: int = 0
    freq_mask_width: float = 0.0  # largest band, as a fraction of the feature bins
    time_masks: int = 0
    time_mask_width: float = 0.0  # largest band, as a fraction of the frames

    @property
    def active(self) -> bool:
        return self.time_shift > 0 or (self.freq_masks > 0 and self.freq_mask_width > 0) or (
            self.time_masks > 0 and self.time_mask_width > 0)


def time_shift(x: torch.Tensor, max_fraction: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Roll each example of ``x`` (B, ..., T) along its last axis by its own random number of frames in
    [-max, max], max = round(max_fraction * T) (a fraction of 1 or more allows any shift)."""
    frames = x.shape[-1]
    limit = min(round(max_fraction * frames), frames - 1)
    if limit <= 0:
        return x
    shifts = torch.randint(-limit, limit + 1, (x.shape[0],), generator=generator).to(x.device)
    index = (torch.arange(frames, device=x.device).unsqueeze(0) - shifts.unsqueeze(1)) % frames  # (B, T)
    index = index.view(x.shape[0], *([1] * (x.dim() - 2)), frames).expand_as(x)
    return torch.gather(x, -1, index)


def band_masks(batch: int, size: int, count: int, max_width: int, generator: torch.Generator | None = None
               ) -> torch.Tensor:
    """(B, size) bool: ``count`` bands per example, each of a random width in [0, max_width] and a random
    start, True inside a band (bands may overlap)."""
    mask = torch.zeros(batch, size, dtype=torch.bool)
    max_width = min(max_width, size)
    if count <= 0 or max_width <= 0:
        return mask
    widths = torch.randint(0, max_width + 1, (batch, count), generator=generator)
    starts = (torch.rand(batch, count, generator=generator) * (size - widths + 1)).long()
    positions = torch.arange(size).view(1, 1, size)
    inside = (positions >= starts.unsqueeze(-1)) & (positions < (starts + widths).unsqueeze(-1))
    return inside.any(dim=1)


def spec_mask(x: torch.Tensor, options: AugmentOptions, generator: torch.Generator | None = None) -> torch.Tensor:
    """Frequency and time masks on ``x`` (B, C, F, T), filled with each example's mean value."""
    batch, _, bins, frames = x.shape
    freq = band_masks(batch, bins, options.freq_masks, round(options.freq_mask_width * bins), generator)
    time = band_masks(batch, frames, options.time_masks, round(options.time_mask_width * frames), generator)
    masked = (freq.view(batch, 1, bins, 1) | time.view(batch, 1, 1, frames)).to(x.device)
    fill = x.mean(dim=(1, 2, 3), keepdim=True)
    return torch.where(masked, fill, x)


def augment(x: torch.Tensor, options: AugmentOptions, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift, then mask: a new tensor, ``x`` untouched; ``x`` itself when nothing is on."""
    if options.time_shift > 0:
        x = time_shift(x, options.time_shift, generator)
    if (options.freq_masks > 0 and options.freq_mask_width > 0) or (options.time_masks > 0 and
                                                                     options.time_mask_width > 0):
        x = spec_mask(x, options, generator)
    return x


@dataclass
class Mix:
    """One mixup draw: ``x = lam * x + (1 - lam) * x[perm]``."""

    lam: float
    perm: torch.Tensor

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return self.lam * x + (1 - self.lam) * x[self.perm]


def draw_mix(batch: int, alpha: float, generator: torch.Generator | None = None) -> Mix:
    """A mixup weight from Beta(alpha, alpha) (drawn from ``generator``: two Gamma draws would use the
    global state) and a permutation of the batch."""
    gammas = torch._standard_gamma(torch.full((2,), float(alpha)), generator=generator)
    lam = float(gammas[0] / gammas.sum())
    return Mix(lam, torch.randperm(batch, generator=generator))


def mix_teacher(teacher_logits: torch.Tensor, mix: Mix) -> torch.Tensor:
    """The teacher's target for a mixed input: ``log(lam p_a + (1 - lam) p_b)`` with ``p = softmax(z)``.

    Mixed in probability space, as mixup mixes the one-hot labels: the target of a 30/70 blend is the
    30/70 blend of the two teacher distributions. Mixing logits instead would give the renormalised
    *geometric* mean, which lets the more confident teacher dominate (two confident, disagreeing
    teachers mix to a near one-hot target, not a 30/70 one). Returned as log-probabilities, which are
    valid logits: every KD method's ``softmax(z / T)`` then sees the mixed distribution at T = 1 and a
    tempered version of it at other temperatures, as it would for any teacher.
    """
    log_p = F.log_softmax(teacher_logits.float(), dim=1)
    lam = min(max(mix.lam, 1e-12), 1 - 1e-12)  # log(0) = -inf would make logaddexp's gradient nan
    return torch.logaddexp(log_p + math.log(lam), log_p[mix.perm] + math.log(1 - lam))
