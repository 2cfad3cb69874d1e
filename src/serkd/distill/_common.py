"""Helpers shared by the KD losses: input checks, logit standardisation, KL reductions.

Notation used by every method's docstring: z_s, z_t student / teacher logits [B, C], y labels [B],
p^T = softmax(z / T), KL(p || q) = sum_c p_c (log p_c - log q_c).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from serkd.registry import Registry

KL_REDUCTIONS = ("mean", "batchmean", "sum")

# filled by each method file's @register(name); the package imports every file in this folder
METHODS: Registry[type] = Registry("KD method")
register = METHODS.register


class LogitLoss(nn.Module):
    """Base of every KD loss: ``loss = method(student_logits, teacher_logits, targets)``.

    Feature-based methods (``needs_embeddings``) also take ``student_emb=`` [B, Ds] and
    ``teacher_emb=`` [B, Dt]; the trainer calls ``bind(Ds, Dt)`` once before building the optimiser
    (a method with a projector creates it there) and optimises ``method.parameters()`` with the model's.
    """

    needs_teacher: bool = True
    needs_embeddings: bool = False

    def bind(self, student_dim: int, teacher_dim: int) -> None:
        """Create what depends on the embedding sizes (projectors); nothing for most methods."""

    def check(self, student: torch.Tensor, teacher: torch.Tensor | None, target: torch.Tensor) -> None:
        name = type(self).__name__
        if student.dim() != 2:
            raise ValueError(f"{name}: student logits must be [B, C], got shape {tuple(student.shape)}")
        if target.shape != student.shape[:1]:
            raise ValueError(
                f"{name}: targets must be [B]={student.shape[0]}, got shape {tuple(target.shape)}"
            )
        if self.needs_teacher:
            if teacher is None:
                raise ValueError(f"{name}: this method needs teacher logits, got None")
            if teacher.shape != student.shape:
                raise ValueError(
                    f"{name}: teacher logits shape {tuple(teacher.shape)} != student {tuple(student.shape)}"
                )

    def extra_repr(self) -> str:
        # Shows the hyper-parameters in print(method) / logs, so a run's config is visible.
        return ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_")
                         and k != "training")


def standardize(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Z-score each row (Sun et al., CVPR 2024): (z - mean) / (std + eps), unbiased std as in their code.

    The teacher and student may then differ in logit range and offset without being penalised.
    """
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True)
    return (logits - mean) / (std + eps)


def maybe_standardize(
    student: torch.Tensor, teacher: torch.Tensor, enabled: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    if not enabled:
        return student, teacher
    return standardize(student), standardize(teacher)


def as_temperatures(temps: float | Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """Temperatures as a 1-D tensor on the logits' device and dtype (a vector dimension, never a loop)."""
    t = torch.as_tensor(temps, dtype=like.dtype, device=like.device).reshape(-1)
    return t


def soften(logits: torch.Tensor, temps: torch.Tensor) -> torch.Tensor:
    """[B, C] logits and K temperatures -> [B, C, K] scaled logits z / T_k."""
    return logits.unsqueeze(-1) / temps


def reduce_kl(kl: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce elementwise KL [B, C, ...] over B and C (trailing dims are kept).

    'mean' divides by B*C (torch's kl_div default, the seed's choice), 'batchmean' by B (the true
    mean KL per example), 'sum' not at all.
    """
    total = kl.sum(dim=(0, 1))
    if reduction == "mean":
        return total / (kl.shape[0] * kl.shape[1])
    if reduction == "batchmean":
        return total / kl.shape[0]
    if reduction == "sum":
        return total
    raise ValueError(f"kl_reduction must be one of {', '.join(KL_REDUCTIONS)}, got {reduction!r}")


def kl_elementwise(log_q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """p (log p - log q) elementwise, 0 where p == 0 (xlogy), as F.kl_div does."""
    return F.kl_div(log_q, p, reduction="none")


def check_temperatures(temperatures) -> list[float]:
    """Temperatures as a non-empty list of positive floats (one-line ValueError otherwise)."""
    temps = [float(t) for t in temperatures]
    if not temps or min(temps) <= 0:
        raise ValueError(f"temperatures must be a non-empty list of positive numbers, got {temps!r}")
    return temps


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def check_positive(name: str, value: float) -> float:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value
