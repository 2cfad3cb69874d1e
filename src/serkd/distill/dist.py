"""DIST: knowledge distillation from a stronger teacher (Huang et al., NeurIPS 2022).

With Y^T = softmax(z / tau) as a [B, C] matrix and rho the Pearson correlation:

    inter = 1 - 1/B sum_i rho(Y_s[i, :], Y_t[i, :])     (relations between classes, per sample)
    intra = 1 - 1/C sum_c rho(Y_s[:, c], Y_t[:, c])     (relations between samples, per class)
    loss  = ce_weight * CE(z_s, y) + tau^2 * (beta * inter + gamma * intra)

Defaults beta = gamma = tau = 1 as in the authors' ImageNet setting (their CIFAR setting is
beta = gamma = 2, tau = 4). Pearson is invariant to a positive affine map of either argument, so
the student is not asked to reproduce the teacher's probabilities, only their relations: a student
whose predictions are the teacher's mixed with the uniform distribution, alpha p_t + (1 - alpha)/C,
has a zero distillation term. Pearson is taken on probabilities, not logits, so the loss is not
invariant to affine maps of the logits (only to adding a per-row constant, as softmax is).

``standardize=True`` z-scores each logit row before dividing by tau (Sun et al., CVPR 2024).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import LogitLoss, check_positive, maybe_standardize, register

EPS = 1e-8


def pearson_rows(x: torch.Tensor, y: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Pearson correlation of matching rows of two [N, D] matrices (the authors' eps in the denominator)."""
    xc = x - x.mean(dim=1, keepdim=True)
    yc = y - y.mean(dim=1, keepdim=True)
    return (xc * yc).sum(dim=1) / (xc.norm(dim=1) * yc.norm(dim=1) + eps)


def inter_class_relation(ys: torch.Tensor, yt: torch.Tensor) -> torch.Tensor:
    return 1 - pearson_rows(ys, yt).mean()


def intra_class_relation(ys: torch.Tensor, yt: torch.Tensor) -> torch.Tensor:
    return 1 - pearson_rows(ys.t(), yt.t()).mean()


@register("dist")
class DIST(LogitLoss):
    def __init__(
        self,
        beta: float = 1.0,
        gamma: float = 1.0,
        tau: float = 1.0,
        ce_weight: float = 1.0,
        standardize: bool = False,
    ):
        super().__init__()
        self.beta = beta
        self.gamma = gamma
        self.tau = check_positive("tau", tau)
        self.ce_weight = ce_weight
        self.standardize = standardize

    def distill(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """The distillation term alone: tau^2 (beta * inter + gamma * intra)."""
        zs, zt = maybe_standardize(student, teacher, self.standardize)
        ys = F.softmax(zs / self.tau, dim=1)
        yt = F.softmax(zt / self.tau, dim=1)
        inter, intra = inter_class_relation(ys, yt), intra_class_relation(ys, yt)
        return self.tau**2 * (self.beta * inter + self.gamma * intra)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.check(student, teacher, target)
        loss = self.distill(student, teacher)
        if self.ce_weight:
            loss = loss + self.ce_weight * F.cross_entropy(student, target)
        return loss
