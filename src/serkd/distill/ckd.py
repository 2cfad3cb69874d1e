"""Cubic KD (the seed paper); seed defaults T = 1..temp_range-1 = 1..5, alpha 0.7, lambda 0.006 / 0.015.

Cubes a = stack_k p_t^{T_k}, b = stack_k p_s^{T_k}, shape [B, C, K]; A_k, B_k their [B, C] slices;
a, b also denote the flattened cubes (N = B*C*K elements).

    loss = sum_k [alpha T_k^2 KL(p_t^{T_k} || p_s^{T_k}) + (1 - alpha) CE(z_s, y)]  (multi-temperature KD)
         + w * sum_ij |a_i a_j - b_i b_j| + w * sum_ij (a_i a_j - b_i b_j)^2         (whole-cube outer prods)
         + lambda_1 * sum_k ||A_k A_k^T - B_k B_k^T||_F^2                            (between instances)
         + lambda_2 * sum_k ||A_k^T A_k - B_k^T B_k||_F^2                            (between classes)

with w = outer_weight = 0.00025. Nothing N x N is ever stored:
- the squared outer term is (|a|^2 - |b|^2)^2 + 2 (|a|^2 |b|^2 - (a.b)^2), an identity;
- the absolute outer term has no identity; a custom autograd function computes it with its
  subgradient 2 sum_j sign(b_i b_j - a_i a_j) b_j (sign(0) = 0, as torch's abs, so equal student
  and teacher cubes give a zero subgradient). ``l1_algorithm='sort'`` (default) uses that for
  positive entries sign(a_i a_j - b_i b_j) = sign(u_i + u_j), u = log a - log b: sorting u turns
  every row's signed sum into a suffix minus a prefix sum, O(N log N). ``'chunked'`` brute-forces
  the N x N signs in row chunks of ``chunk_elems`` (O(N^2) time, bounded memory) with the seed's
  exact roundings; the two differ only on pairs that tie to rounding error.
The seed builds the outer products with three nested Python loops and the last two terms with
five (and ships them broken); the closed forms give the same numbers (checked against the seed's
values and gradients in float64).

Seed quirks kept as defaults: the KL is reduced with 'mean' (divided by B*C; ``kl_reduction=
'batchmean'`` divides by B), and CE is added once per temperature (K (1 - alpha) CE in all).
The student cube uses softmax exactly like the teacher's, not exp(log_softmax).

``standardize=True`` z-scores each logit row before the temperatures (Sun et al., CVPR 2024) in the
KL part only, as Sun et al. do for the multi-level KL of MLKD; the cubes stay on raw logits.
``temperatures`` overrides temp_range with an explicit list.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ._common import (
    KL_REDUCTIONS,
    LogitLoss,
    as_temperatures,
    check_choice,
    check_temperatures,
    kl_elementwise,
    maybe_standardize,
    reduce_kl,
    register,
    soften,
)

# Elements of the N x N difference processed at once by the chunked algorithm: ~16 MB per float64 buffer.
DEFAULT_CHUNK_ELEMS = 1 << 21
L1_ALGORITHMS = ("sort", "chunked")


def _l1_sort(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Value and half-gradients (d/da / 2, d/db / 2) of sum_ij |a_i a_j - b_i b_j| for a, b >= 0, O(N log N).

    For positive entries sign(a_i a_j - b_i b_j) = sign(u_i + u_j) with u = log a - log b, so each
    row's signed sums sum_j s_ij a_j, sum_j s_ij b_j are a suffix minus a prefix of the entries
    sorted by u. Ties u_i + u_j = 0 (equal student and teacher) get sign 0. Entries where a_i = b_i = 0
    have all-zero rows and columns and are masked out; a single zero gives u = -inf or +inf, which
    the comparisons handle. Float64 throughout keeps the prefix-sum differences accurate.
    """
    a64, b64 = a.double(), b.double()
    u = torch.log(a64) - torch.log(b64)
    both_zero = torch.isnan(u)
    u = u.masked_fill(both_zero, 0.0)
    u_sorted, order = torch.sort(u)
    zero = a64.new_zeros(1)
    prefix_a = torch.cat([zero, a64[order].cumsum(0)])
    prefix_b = torch.cat([zero, b64[order].cumsum(0)])
    below = torch.searchsorted(u_sorted, -u, side="left")  # j with u_j < -u_i: sign -1
    upto = torch.searchsorted(u_sorted, -u, side="right")  # j with u_j <= -u_i: not +1
    signed_a = (prefix_a[-1] - prefix_a[upto]) - prefix_a[below]
    signed_b = (prefix_b[-1] - prefix_b[upto]) - prefix_b[below]
    signed_a = signed_a.masked_fill(both_zero, 0.0)
    signed_b = signed_b.masked_fill(both_zero, 0.0)
    value = (a64 * signed_a).sum() - (b64 * signed_b).sum()
    return value.to(a.dtype), signed_a.to(a.dtype), (-signed_b).to(b.dtype)


def _l1_chunked(
    a: torch.Tensor, b: torch.Tensor, chunk_elems: int, need_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Value and half-gradients of sum_ij |a_i a_j - b_i b_j| by brute force over row chunks, O(N^2).

    Only the upper block-triangle is visited: the diagonal block counts once, the blocks to its
    right twice. Same roundings as the seed's b_i * b_j - a_i * a_j (no fused multiply-add).
    """
    n = a.numel()
    rows = min(n, max(1, chunk_elems // max(n, 1)))
    total = a.new_zeros(())
    grad_a = torch.zeros_like(a) if need_grad else None
    grad_b = torch.zeros_like(b) if need_grad else None
    # Two reused work buffers: fresh large allocations per op cost more than the arithmetic.
    work_d, work_t = a.new_empty(rows * n), a.new_empty(rows * n)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        height, width = stop - start, n - start
        d = work_d[: height * width].view(height, width)
        t = work_t[: height * width].view(height, width)
        torch.mul(a[start:stop, None], a[None, start:], out=d)
        torch.mul(b[start:stop, None], b[None, start:], out=t)
        d.sub_(t)
        torch.abs(d, out=t)
        total += t[:, :height].sum() + 2 * t[:, height:].sum()
        if need_grad:
            sign = torch.sign(d, out=t)
            grad_a[start:stop] += sign @ a[start:]
            grad_a[stop:] += sign[:, height:].t() @ a[start:stop]
            grad_b[start:stop] -= sign @ b[start:]
            grad_b[stop:] -= sign[:, height:].t() @ b[start:stop]
    return total, grad_a, grad_b


class OuterL1(torch.autograd.Function):
    """sum_ij |a_i a_j - b_i b_j| with its subgradient computed in the forward pass (backward is O(N))."""

    @staticmethod
    def forward(
        ctx, a: torch.Tensor, b: torch.Tensor, algorithm: str, chunk_elems: int, want_grad: bool
    ) -> torch.Tensor:
        if algorithm == "sort":
            value, grad_a, grad_b = _l1_sort(a, b)
        else:
            value, grad_a, grad_b = _l1_chunked(a, b, chunk_elems, want_grad)
        if want_grad:
            ctx.save_for_backward(grad_a, grad_b)
        return value

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_a, grad_b = ctx.saved_tensors
        # d/da_i sum_jk |a_j a_k - ...| picks up row i and column i of a symmetric matrix: factor 2.
        ga = 2 * grad_out * grad_a if ctx.needs_input_grad[0] else None
        gb = 2 * grad_out * grad_b if ctx.needs_input_grad[1] else None
        return ga, gb, None, None, None


def outer_l1(
    a: torch.Tensor, b: torch.Tensor, algorithm: str = "sort", chunk_elems: int = DEFAULT_CHUNK_ELEMS
) -> torch.Tensor:
    """sum_ij |a_i a_j - b_i b_j| of two flattened tensors without storing the outer products.

    ``algorithm='sort'`` (O(N log N)) needs a, b >= 0, as probabilities are; ``'chunked'`` (O(N^2)
    time, O(chunk_elems) memory) takes any reals and reproduces the seed's roundings exactly.
    Subgradient: sign(0) = 0, as torch's abs.
    """
    check_choice("algorithm", algorithm, L1_ALGORITHMS)
    if algorithm == "sort" and bool((a < 0).any() or (b < 0).any()):
        raise ValueError("outer_l1(algorithm='sort') needs non-negative inputs; use algorithm='chunked'")
    return _outer_l1(a, b, algorithm, chunk_elems)


def _outer_l1(a: torch.Tensor, b: torch.Tensor, algorithm: str, chunk_elems: int) -> torch.Tensor:
    # No input check here: CKD feeds softmax outputs, and the check would sync a GPU every batch.
    # The chunked sign pass costs as much as the value: skip it under no_grad (evaluation).
    want_grad = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
    return OuterL1.apply(a.reshape(-1), b.reshape(-1), algorithm, chunk_elems, want_grad)


def outer_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_ij (a_i a_j - b_i b_j)^2 = (|a|^2 - |b|^2)^2 + 2 (|a|^2 |b|^2 - (a.b)^2)."""
    a, b = a.reshape(-1), b.reshape(-1)
    aa, bb, ab = a.dot(a), b.dot(b), a.dot(b)
    return (aa - bb).square() + 2 * (aa * bb - ab.square())


def gram_terms(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum_k ||A_k A_k^T - B_k B_k^T||_F^2, sum_k ||A_k^T A_k - B_k^T B_k||_F^2) for [B, C, K] cubes."""
    # Contiguous [K, B, C] copies: CPU bmm on the permuted views copies per matrix, which costs more.
    ak, bk = a.permute(2, 0, 1).contiguous(), b.permute(2, 0, 1).contiguous()
    instances = (ak @ ak.transpose(1, 2) - bk @ bk.transpose(1, 2)).square().sum()
    classes = (ak.transpose(1, 2) @ ak - bk.transpose(1, 2) @ bk).square().sum()
    return instances, classes


@register("ckd")
class CKD(LogitLoss):
    def __init__(
        self,
        temp_range: int = 6,
        lambda_1: float = 0.006,
        lambda_2: float = 0.015,
        alpha: float = 0.7,
        outer_weight: float = 0.00025,
        kl_reduction: str = "mean",
        standardize: bool = False,
        temperatures: Sequence[float] | None = None,
        l1_algorithm: str = "sort",
        chunk_elems: int = DEFAULT_CHUNK_ELEMS,
    ):
        super().__init__()
        temps = check_temperatures(range(1, int(temp_range)) if temperatures is None else temperatures)
        if int(chunk_elems) < 1:
            raise ValueError(f"chunk_elems must be >= 1, got {chunk_elems!r}")
        self.temp_range = temp_range
        self.temperatures = temps
        self.lambda_1 = lambda_1
        self.lambda_2 = lambda_2
        self.alpha = alpha
        self.outer_weight = outer_weight
        self.kl_reduction = check_choice("kl_reduction", kl_reduction, KL_REDUCTIONS)
        self.standardize = standardize
        self.l1_algorithm = check_choice("l1_algorithm", l1_algorithm, L1_ALGORITHMS)
        self.chunk_elems = int(chunk_elems)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.check(student, teacher, target)
        temps = as_temperatures(self.temperatures, student)
        s_scaled, t_scaled = soften(student, temps), soften(teacher, temps)  # [B, C, K]
        a = F.softmax(t_scaled, dim=1)
        b = F.softmax(s_scaled, dim=1)
        if self.standardize:
            zs, zt = maybe_standardize(student, teacher, True)
            log_ps, pt = F.log_softmax(soften(zs, temps), dim=1), F.softmax(soften(zt, temps), dim=1)
        else:
            log_ps, pt = F.log_softmax(s_scaled, dim=1), a
        kl = reduce_kl(kl_elementwise(log_ps, pt), self.kl_reduction)  # [K]
        ce = F.cross_entropy(student, target)
        loss_kd = (self.alpha * temps.square() * kl).sum() + len(self.temperatures) * (1 - self.alpha) * ce
        loss_outer = self.outer_weight * (_outer_l1(a, b, self.l1_algorithm, self.chunk_elems) + outer_l2(a, b))
        instances, classes = gram_terms(a, b)
        return loss_kd + loss_outer + self.lambda_1 * instances + self.lambda_2 * classes
