"""Relational KD (Park et al., CVPR 2019) on embeddings, as the paper applies it.

    psi_D(i, j)    = ||e_i - e_j|| / mu,  mu = mean of the non-zero pairwise distances
    psi_A(i, j, k) = <e_ij, e_kj>,        e_ij = (e_i - e_j) / ||e_i - e_j||
    feature = distance_weight * SmoothL1(psi_D(e_s), psi_D(e_t)) + angle_weight * SmoothL1(psi_A(e_s), psi_A(e_t))
    loss    = ce_weight * CE(z_s, y) + kd_weight * T^2 * KL(p_t^T || p_s^T) + feat_weight * feature

The relations are those of ``rkd`` (the logit version, same helpers): SmoothL1 with beta 1 and mean
reduction, teacher relations without gradient. Defaults distance_weight 25, angle_weight 50 from the
paper and the CRD repository (``RKDLoss(w_d=25, w_a=50)``, ``--distill rkd -b 1``); ce_weight 1, no
logit KD. Normalising distances by their mean is the paper's standardisation: the distance term is
invariant to the scale of either embedding, the angle term to scale and rotation; the dimensions may
differ, no projector. Memory: the angle term builds a [B, B, D] tensor per side (B=256, D=768: 200 MB).
"""

from __future__ import annotations

import torch

from ._common import register
from ._feature import FeatureLoss
from .rkd import rkd_terms


@register("rkd_emb")
class RKDEmb(FeatureLoss):
    def __init__(
        self,
        distance_weight: float = 25.0,
        angle_weight: float = 50.0,
        feat_weight: float = 1.0,
        ce_weight: float = 1.0,
        kd_weight: float = 0.0,
        temp: float = 4.0,
        teacher_layer: int | str | None = None,
    ):
        super().__init__(feat_weight, ce_weight, kd_weight, temp, teacher_layer)
        self.distance_weight = distance_weight
        self.angle_weight = angle_weight

    def feature(self, student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
        loss_d, loss_a = rkd_terms(student_emb, teacher_emb)
        return self.distance_weight * loss_d + self.angle_weight * loss_a
