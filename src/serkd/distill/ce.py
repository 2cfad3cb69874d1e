"""Plain cross-entropy, no teacher (the seed's ``pure``).

    loss = CE(z_s, y) = -1/B sum_i log softmax(z_s)_i[y_i]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import LogitLoss, register


@register("ce", aliases=("pure",))
class CE(LogitLoss):
    needs_teacher = False

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = label_smoothing

    def forward(
        self, student: torch.Tensor, teacher: torch.Tensor | None, target: torch.Tensor
    ) -> torch.Tensor:
        self.check(student, teacher, target)
        return F.cross_entropy(student, target, label_smoothing=self.label_smoothing)
