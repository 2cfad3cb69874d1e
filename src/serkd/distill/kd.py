"""Hinton KD, seed defaults T = 1.2, alpha = 0.7.

    loss = alpha * T^2 * KL(p_t^T || p_s^T) + (1 - alpha) * CE(z_s, y)

Seed quirk (the default): the KL uses ``F.kl_div``'s default reduction 'mean', i.e. the sum over
all B*C elements divided by B*C, so the distillation term is C times smaller than the usual
per-example KL. ``kl_reduction='batchmean'`` gives the textbook form (divide by B).

``standardize=True`` z-scores each logit row before dividing by T (Sun et al., CVPR 2024).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import KL_REDUCTIONS, LogitLoss, check_choice, check_positive, maybe_standardize, reduce_kl, register


@register("kd")
class KD(LogitLoss):
    def __init__(
        self,
        temp: float = 1.2,
        alpha: float = 0.7,
        kl_reduction: str = "mean",
        standardize: bool = False,
    ):
        super().__init__()
        self.temp = check_positive("temp", temp)
        self.alpha = alpha
        self.kl_reduction = check_choice("kl_reduction", kl_reduction, KL_REDUCTIONS)
        self.standardize = standardize

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.check(student, teacher, target)
        zs, zt = maybe_standardize(student, teacher, self.standardize)
        log_ps = F.log_softmax(zs / self.temp, dim=1)
        pt = F.softmax(zt / self.temp, dim=1)
        kl = reduce_kl(F.kl_div(log_ps, pt, reduction="none"), self.kl_reduction)
        ce = F.cross_entropy(student, target)
        return self.alpha * self.temp**2 * kl + (1 - self.alpha) * ce
