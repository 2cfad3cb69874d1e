"""Multi-level logit distillation (Jin et al., CVPR 2023), without the augmentation views.

For each temperature T in ``temperatures`` (default 2, 3, 4, 5, 6), with P^T = softmax(z / T) as a
[B, C] matrix:

    instance = sum_T T^2 * 1/B sum_i KL(p_t^T[i] || p_s^T[i])
    batch    = sum_T ||P_t^T P_t^T' - P_s^T P_s^T'||_F^2 / B     (B x B sample-similarity Gram)
    class    = sum_T ||P_t^T' P_t^T - P_s^T' P_s^T||_F^2 / C     (C x C class-correlation Gram)
    loss = ce_weight * CE(z_s, y) + kd_weight * instance + bc_weight * batch + cc_weight * class

The paper's recipe also feeds a weak and a strong augmentation of every input and masks the KD
terms by the teacher's confidence; neither fits a per-batch logit loss, so both are left out
(with precomputed teacher logits there is only one view). Every distillation term is zero (the
Gram terms exactly, the KL to rounding) when the student's logits equal the teacher's.

``standardize=True`` z-scores each logit row before dividing by T in the instance-level KL, as
Sun et al. (CVPR 2024) apply it to MLKD; the Gram terms stay on the raw logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ._common import LogitLoss, as_temperatures, check_temperatures, kl_elementwise, maybe_standardize, register, soften


@register("mlkd")
class MLKD(LogitLoss):
    def __init__(
        self,
        temperatures: Sequence[float] = (2.0, 3.0, 4.0, 5.0, 6.0),
        ce_weight: float = 1.0,
        kd_weight: float = 1.0,
        bc_weight: float = 1.0,
        cc_weight: float = 1.0,
        standardize: bool = False,
    ):
        super().__init__()
        temps = check_temperatures(temperatures)
        self.temperatures = temps
        self.ce_weight = ce_weight
        self.kd_weight = kd_weight
        self.bc_weight = bc_weight
        self.cc_weight = cc_weight
        self.standardize = standardize

    def terms(
        self, student: torch.Tensor, teacher: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(instance, batch, class) distillation terms, unweighted."""
        n_batch, n_class = student.shape
        temps = as_temperatures(self.temperatures, student)
        zs, zt = maybe_standardize(student, teacher, self.standardize)
        log_ps = F.log_softmax(soften(zs, temps), dim=1)
        pt = F.softmax(soften(zt, temps), dim=1)
        instance = (temps.square() * kl_elementwise(log_ps, pt).sum(dim=(0, 1))).sum() / n_batch

        ps = F.softmax(soften(student, temps), dim=1).permute(2, 0, 1).contiguous()  # [K, B, C]
        qt = F.softmax(soften(teacher, temps), dim=1).permute(2, 0, 1).contiguous()
        batch = (qt @ qt.transpose(1, 2) - ps @ ps.transpose(1, 2)).square().sum() / n_batch
        klass = (qt.transpose(1, 2) @ qt - ps.transpose(1, 2) @ ps).square().sum() / n_class
        return instance, batch, klass

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.check(student, teacher, target)
        instance, batch, klass = self.terms(student, teacher)
        loss = self.kd_weight * instance + self.bc_weight * batch + self.cc_weight * klass
        if self.ce_weight:
            loss = loss + self.ce_weight * F.cross_entropy(student, target)
        return loss
