"""Similarity-preserving KD (Tung & Mori, ICCV 2019): match the batch's pairwise-similarity (Gram) matrices.

    G = e e^T  [B, B],   G~ = G with each row divided by its L2 norm
    feature = 1/B^2 ||G~_t - G~_s||_F^2
    loss    = ce_weight * CE(z_s, y) + kd_weight * T^2 * KL(p_t^T || p_s^T) + feat_weight * feature

The paper's row-wise L2 normalisation of G is its only standardisation; it makes the term invariant
to the scale of either embedding. Default feat_weight 3000: the paper's gamma for CIFAR-10 and the
CRD repository's (``--distill similarity -b 3000``); ce_weight 1, no logit KD. Only relations within
the batch are compared: the dimensions may differ, no projector.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import register
from ._feature import FeatureLoss


def normalized_gram(emb: torch.Tensor) -> torch.Tensor:
    """[B, D] -> [B, B] Gram matrix with L2-normalised rows."""
    return F.normalize(emb @ emb.t(), p=2, dim=1)


@register("sp")
class SP(FeatureLoss):
    def __init__(
        self,
        feat_weight: float = 3000.0,
        ce_weight: float = 1.0,
        kd_weight: float = 0.0,
        temp: float = 4.0,
        teacher_layer: int | str | None = None,
    ):
        super().__init__(feat_weight, ce_weight, kd_weight, temp, teacher_layer)

    def feature(self, student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
        diff = normalized_gram(teacher_emb) - normalized_gram(student_emb)
        return diff.square().sum() / student_emb.shape[0] ** 2
