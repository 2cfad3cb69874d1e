"""KD losses: the seed's reference vectors, the registry, and each method's defining property."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from serkd import distill
from serkd.distill.ckd import gram_terms, outer_l1, outer_l2
from serkd.distill.dist import inter_class_relation, intra_class_relation

REPO = Path(__file__).resolve().parents[1]
# shared/ sits inside the checkout on some machines and beside it on others.
VECTORS = next(
    (p for p in (REPO / "shared", REPO.parent / "shared")
     if (p / "reference" / "loss_vectors.json").exists()),
    REPO / "shared",
) / "reference" / "loss_vectors.json"
CASES = json.loads(VECTORS.read_text())["cases"] if VECTORS.exists() else []

KL_METHODS = ["kd", "dkd", "ckd", "mlkd", "dist"]
# Parameters that leave only the distillation term (no CE on the labels).
PURE = {
    "kd": {"alpha": 1.0},
    "dkd": {},
    "ckd": {"alpha": 1.0},
    "mlkd": {"ce_weight": 0.0},
    "dist": {"ce_weight": 0.0},
    "rkd": {"ce_weight": 0.0},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def logits(b: int, c: int, seed: int, dtype=torch.float64, scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, c, generator=g) * scale).to(dtype)


def labels(b: int, c: int, seed: int) -> torch.Tensor:
    return torch.randint(0, c, (b,), generator=torch.Generator().manual_seed(seed))


# --- the seed's own numbers ------------------------------------------------------------------


@pytest.mark.skipif(not CASES, reason="reference/loss_vectors.json not found")
@pytest.mark.parametrize("case", CASES, ids=[f"{c['method']}-{len(c['student'])}x{len(c['student'][0])}-{i}"
                                             for i, c in enumerate(CASES)])
def test_matches_seed_vectors(case: dict) -> None:
    student = torch.tensor(case["student"], dtype=torch.float64, requires_grad=True)
    teacher = torch.tensor(case["teacher"], dtype=torch.float64)
    target = torch.tensor(case["target"], dtype=torch.long)
    method = distill.create(case["method"], **case["params"])
    loss = method(student, None if case["method"] == "ce" else teacher, target)
    loss.backward()
    expected = torch.tensor(case["grad"], dtype=torch.float64)
    assert loss.item() == pytest.approx(case["loss"], rel=1e-6)
    torch.testing.assert_close(student.grad, expected, rtol=1e-6, atol=1e-6 * expected.abs().max().item())


@pytest.mark.skipif(not CASES, reason="reference/loss_vectors.json not found")
@pytest.mark.parametrize("case", [c for c in CASES if c["method"] == "ckd"])
def test_ckd_chunked_matches_seed_vectors(case: dict) -> None:
    student = torch.tensor(case["student"], dtype=torch.float64, requires_grad=True)
    teacher = torch.tensor(case["teacher"], dtype=torch.float64)
    target = torch.tensor(case["target"], dtype=torch.long)
    method = distill.create("ckd", l1_algorithm="chunked", chunk_elems=100, **case["params"])
    method(student, teacher, target).backward()
    expected = torch.tensor(case["grad"], dtype=torch.float64)
    torch.testing.assert_close(student.grad, expected, rtol=1e-6, atol=1e-6 * expected.abs().max().item())


def test_vectors_cover_every_seed_method() -> None:
    if not CASES:
        pytest.skip("reference vectors not found")
    assert {c["method"] for c in CASES} == {"ce", "kd", "dkd", "rkd", "ckd"}


# --- registry ----------------------------------------------------------------------------------


def test_available_lists_all_methods() -> None:
    names = distill.available()
    assert names[:5] == ["ce", "kd", "dkd", "rkd", "ckd"]  # the seed's five lead every listing
    assert {"mlkd", "dist"} <= set(names) and len(names) == len(set(names))
    assert {"fitnet", "pkt", "sp", "rkd_emb"} <= set(names)


def test_seed_defaults_and_parameter_names() -> None:
    assert distill.defaults("kd") == {"temp": 1.2, "alpha": 0.7, "kl_reduction": "mean", "standardize": False}
    d = distill.defaults("dkd")
    assert (d["alpha"], d["beta"], d["temperature"], d["ce_weight"]) == (1.0, 0.25, 1.0, 0.0)
    d = distill.defaults("rkd")
    assert (d["distance_weight"], d["angle_weight"]) == (0.3, 0.7)
    d = distill.defaults("ckd")
    assert (d["temp_range"], d["lambda_1"], d["lambda_2"], d["alpha"]) == (6, 0.006, 0.015, 0.7)
    assert distill.create("ckd").temperatures == [1, 2, 3, 4, 5]


def test_unknown_name_is_one_line_value_error() -> None:
    with pytest.raises(ValueError) as err:
        distill.create("no_such_method")
    msg = str(err.value)
    assert "\n" not in msg and "no_such_method" in msg
    assert all(name in msg for name in distill.available())


def test_unknown_parameter_is_one_line_type_error() -> None:
    with pytest.raises(TypeError) as err:
        distill.create("kd", temperature=4.0)
    msg = str(err.value)
    assert "\n" not in msg and "temperature" in msg and "temp" in msg


def test_bad_values_are_value_errors() -> None:
    with pytest.raises(ValueError):
        distill.create("kd", temp=0.0)
    with pytest.raises(ValueError):
        distill.create("kd", kl_reduction="avg")
    with pytest.raises(ValueError):
        distill.create("ckd", temp_range=1)


def test_aliases_and_case() -> None:
    assert isinstance(distill.create("pure"), distill.CE)
    assert isinstance(distill.create("CKD"), distill.CKD)


def test_needs_teacher_flags() -> None:
    flags = {name: distill.get(name).needs_teacher for name in distill.available()}
    assert flags == {name: name != "ce" for name in distill.available()}
    assert all(isinstance(v, bool) for v in flags.values())


def test_register_adds_a_method() -> None:
    @distill.register("dummy_for_test")
    class Dummy(distill.LogitLoss):
        def forward(self, student, teacher, target):
            return student.sum() * 0

    try:
        assert "dummy_for_test" in distill.available()
        assert isinstance(distill.create("dummy_for_test"), Dummy)
    finally:
        distill.METHODS.unregister("dummy_for_test")


@pytest.mark.parametrize("name", ["ce", "kd", "dkd", "rkd", "ckd", "mlkd", "dist"])
def test_every_method_scalar_finite_with_gradient(name: str) -> None:
    s = logits(16, 7, 0, torch.float32).requires_grad_()
    t = logits(16, 7, 1, torch.float32)
    y = labels(16, 7, 2)
    loss = distill.create(name)(s, None if name == "ce" else t, y)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_shape_errors() -> None:
    kd = distill.create("kd")
    with pytest.raises(ValueError):
        kd(logits(4, 3, 0), None, labels(4, 3, 0))
    with pytest.raises(ValueError):
        kd(logits(4, 3, 0), logits(4, 4, 0), labels(4, 3, 0))
    with pytest.raises(ValueError):
        kd(logits(4, 3, 0), logits(4, 3, 0), labels(5, 3, 0))


@pytest.mark.parametrize(
    ("name", "params"),
    [("kd", {}), ("kd", {"standardize": True}), ("dkd", {"ce_weight": 1.0}), ("dkd", {"standardize": True}),
     ("rkd", {}), ("ckd", {}), ("ckd", {"standardize": True, "kl_reduction": "batchmean"}),
     ("mlkd", {}), ("mlkd", {"standardize": True}), ("dist", {"tau": 2.0, "standardize": True})],
)
def test_gradcheck(name: str, params: dict) -> None:
    s = logits(5, 4, 10).requires_grad_()
    t = logits(5, 4, 11)
    y = labels(5, 4, 12)
    method = distill.create(name, **params)
    assert torch.autograd.gradcheck(lambda z: method(z, t, y), (s,), eps=1e-6, atol=1e-5)


# --- corrected forms ---------------------------------------------------------------------------


def test_kd_batchmean_is_c_times_mean() -> None:
    s, t, y = logits(8, 7, 0), logits(8, 7, 1), labels(8, 7, 2)
    mean = distill.create("kd", alpha=1.0)(s, t, y)
    batchmean = distill.create("kd", alpha=1.0, kl_reduction="batchmean")(s, t, y)
    torch.testing.assert_close(batchmean, 7 * mean)
    kl = F.kl_div(F.log_softmax(s / 1.2, 1), F.softmax(t / 1.2, 1), reduction="batchmean") * 1.2**2
    torch.testing.assert_close(batchmean, kl)


def test_dkd_ce_weight_adds_ce() -> None:
    s, t, y = logits(8, 7, 0), logits(8, 7, 1), labels(8, 7, 2)
    plain = distill.create("dkd")(s, t, y)
    with_ce = distill.create("dkd", ce_weight=1.0)(s, t, y)
    torch.testing.assert_close(with_ce - plain, F.cross_entropy(s, y))


def test_dkd_survives_extreme_logits_in_float32() -> None:
    # The seed takes log of summed probabilities, which is -inf once a probability underflows.
    s = (logits(8, 7, 0, torch.float32) * 200).requires_grad_()
    t = logits(8, 7, 1, torch.float32) * 200
    loss = distill.create("dkd", ce_weight=1.0)(s, t, labels(8, 7, 2))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


# --- CKD closed forms --------------------------------------------------------------------------


def dense_outer_terms(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = a.reshape(-1), b.reshape(-1)
    d = torch.outer(b, b) - torch.outer(a, a)
    return d.abs().sum(), d.square().sum()


@pytest.mark.parametrize(("algorithm", "chunk"), [("sort", 0), ("chunked", 1), ("chunked", 64), ("chunked", 1 << 21)])
def test_outer_l1_matches_dense(algorithm: str, chunk: int) -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 4, 5, generator=g, dtype=torch.float64)
    b = torch.rand(3, 4, 5, generator=g, dtype=torch.float64)
    # Zeros on one side, on both sides, and equal entries (ties) exercise the sort path's edge cases.
    a[0, 0, :2] = 0.0
    b[0, 1, :2] = 0.0
    a[1, 0, 0] = b[1, 0, 0] = 0.0
    a[2, 3] = b[2, 3]
    a.requires_grad_()
    b.requires_grad_()
    value = outer_l1(a, b, algorithm, max(chunk, 1))
    ga, gb = torch.autograd.grad(value, (a, b))
    a2, b2 = a.detach().requires_grad_(), b.detach().requires_grad_()
    dense = dense_outer_terms(a2, b2)[0]
    ga2, gb2 = torch.autograd.grad(dense, (a2, b2))
    torch.testing.assert_close(value, dense)
    torch.testing.assert_close(ga, ga2)
    torch.testing.assert_close(gb, gb2)


def test_outer_l1_algorithms_agree_in_float32() -> None:
    a = torch.softmax(logits(64, 7, 0, torch.float32).unsqueeze(-1) / torch.arange(1.0, 6.0), dim=1)
    b = torch.softmax(logits(64, 7, 1, torch.float32).unsqueeze(-1) / torch.arange(1.0, 6.0), dim=1)
    b.requires_grad_()
    fast = outer_l1(a, b, "sort")
    (g_fast,) = torch.autograd.grad(fast, b)
    exact = outer_l1(a, b, "chunked")
    (g_exact,) = torch.autograd.grad(exact, b)
    torch.testing.assert_close(fast, exact, rtol=1e-5, atol=0)
    torch.testing.assert_close(g_fast, g_exact, rtol=1e-4, atol=1e-4 * g_exact.abs().max().item())


def test_outer_l1_sort_rejects_negative_inputs() -> None:
    with pytest.raises(ValueError):
        outer_l1(torch.tensor([1.0, -1.0]), torch.tensor([1.0, 1.0]), "sort")


def test_outer_l2_identity() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.rand(60, generator=g, dtype=torch.float64)
    b = torch.rand(60, generator=g, dtype=torch.float64).requires_grad_()
    b2 = b.detach().requires_grad_()
    closed, dense = outer_l2(a, b), dense_outer_terms(a, b2)[1]
    torch.testing.assert_close(closed, dense)
    torch.testing.assert_close(torch.autograd.grad(closed, b)[0], torch.autograd.grad(dense, b2)[0])


def test_gram_terms_match_the_seed_index_sums() -> None:
    # The seed's loops: sum_k sum_{i,l} (sum_j D[l,j,k,i,j,k])^2 and sum_k sum_{j,m} (sum_i D[i,m,k,i,j,k])^2
    # with D the 6-d difference of the two outer-product cubes; done here with einsum on D itself.
    g = torch.Generator().manual_seed(2)
    a = torch.rand(3, 4, 2, generator=g, dtype=torch.float64)
    b = torch.rand(3, 4, 2, generator=g, dtype=torch.float64)
    d = torch.einsum("ijk,lmn->ijklmn", a, a) - torch.einsum("ijk,lmn->ijklmn", b, b)
    sub1 = torch.einsum("ljkijk->lik", d).square().sum()
    sub2 = torch.einsum("imkijk->mjk", d).square().sum()
    instances, classes = gram_terms(a, b)
    torch.testing.assert_close(instances, sub1)
    torch.testing.assert_close(classes, sub2)


@pytest.mark.parametrize("algorithm", ["sort", "chunked"])
def test_ckd_equal_logits_zero_distillation_and_subgradient(algorithm: str) -> None:
    z = logits(6, 4, 3)
    s = z.clone().requires_grad_()
    loss = distill.create("ckd", alpha=1.0, l1_algorithm=algorithm)(s, z, labels(6, 4, 0))
    loss.backward()
    assert abs(loss.item()) < 1e-12
    assert s.grad.abs().max().item() < 1e-12


MEMORY_PROBE = """
import ctypes, gc, sys, torch
from serkd import distill

def status_kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))

torch.set_num_threads(1)
s = torch.randn(256, 7, requires_grad=True); t = torch.randn(256, 7); y = torch.randint(0, 7, (256,))
for algorithm in ("sort", "chunked"):
    m = distill.create("ckd", l1_algorithm=algorithm)
    m(s[:2], t[:2], y[:2]).backward()
    s.grad = None
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # peak RSS := current RSS
    before = status_kib("VmRSS:")
    m(s, t, y).backward()
    s.grad = None
    print(algorithm, status_kib("VmHWM:") - before)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_ckd_batch_256_memory_under_1gib() -> None:
    # The outer products alone would be 2 x 80M floats; autograd through them several times that.
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    extra = {line.split()[0]: int(line.split()[1]) for line in out.stdout.strip().splitlines()}
    assert set(extra) == {"sort", "chunked"}
    for algorithm, kib in extra.items():
        assert kib < 1024 * 1024, f"CKD ({algorithm}) at B=256 used {kib / 1024:.0f} MiB extra"


# --- logit standardisation ---------------------------------------------------------------------


def test_standardize_rows() -> None:
    z = distill.standardize(logits(5, 7, 0))
    torch.testing.assert_close(z.mean(1), torch.zeros(5, dtype=z.dtype), atol=1e-12, rtol=0)
    torch.testing.assert_close(z.std(1), torch.ones(5, dtype=z.dtype), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", KL_METHODS)
def test_standardized_distillation_ignores_student_shift_and_scale(name: str) -> None:
    s, t, y = logits(8, 7, 0), logits(8, 7, 1), labels(8, 7, 2)
    method = distill.create(name, standardize=True, **PURE[name])
    if name == "ckd":  # only the KL part is standardised; the cube terms see raw logits
        method.lambda_1 = method.lambda_2 = method.outer_weight = 0.0
    if name == "mlkd":
        method.bc_weight = method.cc_weight = 0.0
    base = method(s, t, y)
    assert base.item() > 1e-3
    torch.testing.assert_close(method(s + 3.0, t, y), base, rtol=1e-6, atol=0)
    torch.testing.assert_close(method(4.0 * s - 1.0, t, y), base, rtol=1e-6, atol=0)
    plain = distill.create(name, standardize=False, **PURE[name])
    assert abs(plain(4.0 * s, t, y).item() - plain(s, t, y).item()) > 1e-3


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("name", KL_METHODS)
def test_distillation_zero_when_student_equals_teacher(name: str, standardize: bool) -> None:
    z, y = logits(8, 7, 5), labels(8, 7, 6)
    method = distill.create(name, standardize=standardize, **PURE[name])
    assert abs(method(z.clone(), z, y).item()) < 1e-6
    assert method(logits(8, 7, 7), z, y).item() > 1e-3


# --- MLKD --------------------------------------------------------------------------------------


def test_mlkd_terms() -> None:
    s, t = logits(8, 7, 0), logits(8, 7, 1)
    method = distill.create("mlkd")
    instance, batch, klass = method.terms(s, t)
    assert min(instance.item(), batch.item(), klass.item()) > 0
    zero = method.terms(t.clone(), t)
    assert max(abs(v.item()) for v in zero) < 1e-12
    # instance term = sum_T T^2 batchmean KL, the paper's KD at each temperature
    expected = sum(
        T * T * F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean")
        for T in (2.0, 3.0, 4.0, 5.0, 6.0)
    )
    torch.testing.assert_close(instance, expected)
    y = labels(8, 7, 2)
    torch.testing.assert_close(method(s, t, y), instance + batch + klass + F.cross_entropy(s, y))


# --- DIST --------------------------------------------------------------------------------------


def test_dist_zero_for_teacher_mixed_with_uniform() -> None:
    # Pearson ignores positive affine maps, so p_s = a p_t + (1 - a)/C (a valid distribution that KL
    # penalises) costs nothing: the relaxed match that defines DIST.
    t, y = logits(16, 7, 0), labels(16, 7, 1)
    p_t = F.softmax(t, 1)
    s = torch.log(0.4 * p_t + 0.6 / 7)
    dist = distill.create("dist", ce_weight=0.0)
    assert abs(dist(s, t, y).item()) < 1e-6
    assert distill.create("kd", alpha=1.0)(s, t, y).item() > 1e-2


def test_dist_relations_invariant_to_positive_affine_maps_of_probabilities() -> None:
    ys, yt = F.softmax(logits(10, 7, 0), 1), F.softmax(logits(10, 7, 1), 1)
    g = torch.Generator().manual_seed(2)
    scale_rows = torch.rand(10, 1, generator=g, dtype=torch.float64) + 0.1
    shift_rows = torch.randn(10, 1, generator=g, dtype=torch.float64)
    scale_cols = torch.rand(1, 7, generator=g, dtype=torch.float64) + 0.1
    shift_cols = torch.randn(1, 7, generator=g, dtype=torch.float64)
    torch.testing.assert_close(inter_class_relation(ys, scale_rows * yt + shift_rows),
                               inter_class_relation(ys, yt), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(intra_class_relation(ys, scale_cols * yt + shift_cols),
                               intra_class_relation(ys, yt), rtol=1e-6, atol=1e-9)
    # A negative scale flips the relation: the invariance is to positive maps only.
    assert inter_class_relation(ys, -yt).item() > inter_class_relation(ys, yt).item()


def test_dist_ignores_teacher_logit_shift() -> None:
    s, t, y = logits(8, 7, 0), logits(8, 7, 1), labels(8, 7, 2)
    shift = torch.randn(8, 1, dtype=torch.float64) * 5
    dist = distill.create("dist", tau=2.0)
    torch.testing.assert_close(dist(s, t + shift, y), dist(s, t, y))
