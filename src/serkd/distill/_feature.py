"""What the feature-KD methods (fitnet, pkt, sp, rkd_emb) share: embedding checks and the combination

    loss = ce_weight * CE(z_s, y) + kd_weight * T^2 * KL(p_t^T || p_s^T) + feat_weight * feature(e_s, e_t)

with e_s, e_t the student and teacher embeddings [B, Ds], [B, Dt] (the teacher side carries no
gradient). The KL is the per-example mean ('batchmean', as the CRD repo's DistillKL); a term whose
weight is 0 is not computed, so feat_weight=0 gives exactly CE (+ KD). Defaults follow the CRD
repository (Tian et al., ICLR 2020, github.com/HobbitLong/RepDistiller): CE weight 1, no logit KD
(its feature-KD runs use -a 0), T = 4 when KD is switched on.

``teacher_layer`` is only read by the trainer, which passes it to
``serkd.data.teacher_outputs.embedding_matrix``: None (default) = a layered store's learned weighted
sum, a 2-D store's vector; or 'weighted', 'pooled', a layer index.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from serkd.data.teacher_outputs import layer_choice

from ._common import LogitLoss, check_positive, kl_elementwise, reduce_kl


class FeatureLoss(LogitLoss):
    """Base of the feature methods: subclasses define ``feature(student_emb, teacher_emb) -> scalar``."""

    needs_embeddings = True

    def __init__(self, feat_weight: float, ce_weight: float, kd_weight: float, temp: float, teacher_layer):
        super().__init__()
        self.feat_weight = feat_weight
        self.ce_weight = ce_weight
        self.kd_weight = kd_weight
        self.temp = check_positive("temp", temp)
        self.teacher_layer = layer_choice(teacher_layer)

    def feature(self, student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def check_embeddings(self, student_emb, teacher_emb, batch: int) -> None:
        name = type(self).__name__
        for side, emb in (("student_emb", student_emb), ("teacher_emb", teacher_emb)):
            if emb is None:
                raise ValueError(f"{name}: feature KD needs {side}= (embeddings [B, D]), got None")
            if emb.dim() != 2 or emb.shape[0] != batch:
                raise ValueError(f"{name}: {side} must be [B={batch}, D], got shape {tuple(emb.shape)}")

    def forward(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        target: torch.Tensor,
        student_emb: torch.Tensor | None = None,
        teacher_emb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self.check(student, teacher, target)
        self.check_embeddings(student_emb, teacher_emb, student.shape[0])
        loss = self.ce_weight * F.cross_entropy(student, target)
        if self.kd_weight:
            log_ps = F.log_softmax(student / self.temp, dim=1)
            pt = F.softmax(teacher / self.temp, dim=1)
            kl = reduce_kl(kl_elementwise(log_ps, pt), "batchmean")
            loss = loss + self.kd_weight * self.temp**2 * kl
        if self.feat_weight:
            loss = loss + self.feat_weight * self.feature(student_emb, teacher_emb.detach())
        return loss
