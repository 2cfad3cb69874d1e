"""Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018): match the distributions of cosine
similarities within the batch.

    u_b = e_b / ||e_b||                          (unit length, as the paper: a cosine kernel)
    K_ij = (u_i . u_j + 1) / 2,  P_ij = K_ij / sum_k K_ik      (conditional probabilities, rows sum to 1)
    feature = 1/B^2 sum_ij P^t_ij log((P^t_ij + eps) / (P^s_ij + eps)),  eps = 1e-7
    loss    = ce_weight * CE(z_s, y) + kd_weight * T^2 * KL(p_t^T || p_s^T) + feat_weight * feature

As the authors' and the CRD repository's code: the diagonal (i = j) counts, and the KL is averaged
over all B^2 entries. Default feat_weight 30000 from the CRD repository (``--distill pkt -b 30000``),
ce_weight 1, no logit KD. Only relations within the batch are compared: the student and teacher
dimensions may differ, and no projector is needed. Invariant to the scale of either embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import register
from ._feature import FeatureLoss

EPS = 1e-7


def similarity_distribution(emb: torch.Tensor) -> torch.Tensor:
    """[B, D] -> [B, B] rows of conditional probabilities from the cosine kernel (cos + 1) / 2."""
    unit = F.normalize(emb, p=2, dim=1, eps=EPS)
    kernel = (unit @ unit.t() + 1.0) / 2.0
    return kernel / kernel.sum(dim=1, keepdim=True)


@register("pkt")
class PKT(FeatureLoss):
    def __init__(
        self,
        feat_weight: float = 30000.0,
        ce_weight: float = 1.0,
        kd_weight: float = 0.0,
        temp: float = 4.0,
        teacher_layer: int | str | None = None,
    ):
        super().__init__(feat_weight, ce_weight, kd_weight, temp, teacher_layer)

    def feature(self, student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
        p_s = similarity_distribution(student_emb)
        p_t = similarity_distribution(teacher_emb)
        return (p_t * torch.log((p_t + EPS) / (p_s + EPS))).mean()
