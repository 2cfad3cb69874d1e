"""Relational KD (Park et al., CVPR 2019) on logits, as the seed uses it.

    psi_D(i, j)    = ||z_i - z_j|| / mu,  mu = mean of the non-zero pairwise distances
    psi_A(i, j, k) = <e_ij, e_kj>,        e_ij = (z_i - z_j) / ||z_i - z_j||
    rkd  = distance_weight * SmoothL1(psi_D(z_s), psi_D(z_t))
         + angle_weight * SmoothL1(psi_A(z_s), psi_A(z_t))
    loss = ce_weight * CE(z_s, y) + (1 - ce_weight) * rkd

Seed defaults distance_weight = 0.3, angle_weight = 0.7, ce_weight = 0.5 (the seed's fixed 0.5 / 0.5
split); the paper applies RKD to embeddings with weights 25 / 50.
SmoothL1 is torch's (beta 1, mean over elements); the teacher relations carry no gradient.
Distances are clamped at 1e-12 before the square root (the seed's pdist), so identical rows still
count as a tiny non-zero distance in mu, exactly as in the seed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import LogitLoss, register


def _normalized_pdist(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    sq = e.pow(2).sum(dim=1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt()
    eye = torch.eye(len(e), dtype=torch.bool, device=e.device)
    d = d.masked_fill(eye, 0.0)
    positive = d > 0
    return d / d[positive].mean()


def _angles(e: torch.Tensor) -> torch.Tensor:
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2)).reshape(-1)


def rkd_terms(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance, angle) SmoothL1 losses between the relations of two [B, D] sets of rows; D may differ."""
    with torch.no_grad():
        t_dist = _normalized_pdist(teacher)
        t_angle = _angles(teacher)
    loss_d = F.smooth_l1_loss(_normalized_pdist(student), t_dist)
    loss_a = F.smooth_l1_loss(_angles(student), t_angle)
    return loss_d, loss_a


@register("rkd")
class RKD(LogitLoss):
    def __init__(self, distance_weight: float = 0.3, angle_weight: float = 0.7, ce_weight: float = 0.5):
        super().__init__()
        self.distance_weight = distance_weight
        self.angle_weight = angle_weight
        self.ce_weight = ce_weight

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.check(student, teacher, target)
        loss_d, loss_a = rkd_terms(student.flatten(1), teacher.flatten(1))
        rkd = self.distance_weight * loss_d + self.angle_weight * loss_a
        return self.ce_weight * F.cross_entropy(student, target) + (1 - self.ce_weight) * rkd
