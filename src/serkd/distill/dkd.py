"""Decoupled KD (Zhao et al., CVPR 2022), seed defaults alpha = 1, beta = 0.25, T = 1.

With b^T = [p^T_y, 1 - p^T_y] the binary target / non-target split and q^T the softmax over the
non-target classes only (target logit masked out):

    loss = alpha * T^2/B * sum_i KL(b_t^T || b_s^T)        (TCKD)
         + beta  * T^2/B * sum_i KL(q_t^T || q_s^T)        (NCKD)
         + ce_weight * CE(z_s, y)

Seed quirk (the default): no CE term (``ce_weight=0``); the paper trains with CE beside DKD, which
``ce_weight=1.0`` restores. The paper's other defaults (beta = 8, T = 4, a linear warm-up of the KD
term over the first epochs) are the caller's to set; warm-up belongs to the training loop.

The seed masks the target with -1000 and takes log of summed probabilities; here both parts are
computed from log-sum-exps, which gives the same numbers without underflow to log(0).

``standardize=True`` z-scores each logit row before dividing by T (Sun et al., CVPR 2024).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import LogitLoss, check_positive, kl_elementwise, maybe_standardize, register


def _split_log_probs(scaled: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log b (binary target / rest, [B, 2]) and log q (non-target softmax, [B, C], finite at the target)."""
    lse_all = torch.logsumexp(scaled, dim=1, keepdim=True)
    lse_other = torch.logsumexp(scaled.masked_fill(gt, float("-inf")), dim=1, keepdim=True)
    log_target = scaled.masked_select(gt).unsqueeze(1) - lse_all
    log_binary = torch.cat([log_target, lse_other - lse_all], dim=1)
    log_nontarget = scaled - lse_other
    return log_binary, log_nontarget


@register("dkd")
class DKD(LogitLoss):
    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 0.25,
        temperature: float = 1.0,
        ce_weight: float = 0.0,
        standardize: bool = False,
    ):
        super().__init__()
        self.alpha = alpha
        self.beta = beta
        self.temperature = check_positive("temperature", temperature)
        self.ce_weight = ce_weight
        self.standardize = standardize

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.check(student, teacher, target)
        zs, zt = maybe_standardize(student, teacher, self.standardize)
        t = self.temperature
        gt = F.one_hot(target, student.shape[1]).bool()
        log_bs, log_qs = _split_log_probs(zs / t, gt)
        log_bt, log_qt = _split_log_probs(zt / t, gt)
        # exp(-inf) = 0 at the target keeps the non-target KL (and its gradient) exactly zero there.
        qt = log_qt.masked_fill(gt, float("-inf")).exp()
        scale = t * t / student.shape[0]
        tckd = kl_elementwise(log_bs, log_bt.exp()).sum() * scale
        nckd = kl_elementwise(log_qs, qt).sum() * scale
        loss = self.alpha * tckd + self.beta * nckd
        if self.ce_weight:
            loss = loss + self.ce_weight * F.cross_entropy(student, target)
        return loss
