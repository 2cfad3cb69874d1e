"""FitNets hints (Romero et al., ICLR 2015) on embeddings: a learned linear projection of the student's
embedding regresses the teacher's.

    feature = 1/(B Dt) sum_b ||W e_s,b + c - e_t,b||^2              (MSE, mean over B * Dt)
    loss    = ce_weight * CE(z_s, y) + kd_weight * T^2 * KL(p_t^T || p_s^T) + feat_weight * feature

W, c: ``nn.Linear(Ds, Dt)``, created by ``bind(student_dim, teacher_dim)`` (seeded by the global torch
seed) and trained with the student; it is never exported. Defaults from the CRD repository
(RepDistiller, ``--distill hint -a 0 -b 100``): feat_weight 100, ce_weight 1, no logit KD. Unlike
the paper (a conv regressor on a middle layer, trained in a separate first stage) the hint is the
embedding and training is one stage, as in RepDistiller. No standardisation of either embedding (the
paper and RepDistiller regress raw features): a teacher with large activations (WavLM layers) gives
a large term, which ``feat_weight`` absorbs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._common import register
from ._feature import FeatureLoss


@register("fitnet")
class FitNet(FeatureLoss):
    def __init__(
        self,
        feat_weight: float = 100.0,
        ce_weight: float = 1.0,
        kd_weight: float = 0.0,
        temp: float = 4.0,
        teacher_layer: int | str | None = None,
    ):
        super().__init__(feat_weight, ce_weight, kd_weight, temp, teacher_layer)
        self.projector: nn.Linear | None = None

    def bind(self, student_dim: int, teacher_dim: int) -> None:
        self.projector = nn.Linear(int(student_dim), int(teacher_dim))

    def feature(self, student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
        if self.projector is None:
            raise ValueError("FitNet: call bind(student_dim, teacher_dim) before the first loss (it builds the "
                             "projector)")
        if (student_emb.shape[1], teacher_emb.shape[1]) != (self.projector.in_features, self.projector.out_features):
            raise ValueError(
                f"FitNet: embeddings are {student_emb.shape[1]}-d (student) and {teacher_emb.shape[1]}-d (teacher), "
                f"the projector was bound to {self.projector.in_features} -> {self.projector.out_features}"
            )
        return F.mse_loss(self.projector(student_emb), teacher_emb)
