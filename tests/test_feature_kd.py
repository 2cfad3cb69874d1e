"""Feature KD: the four embedding methods' defining properties, the teacher store's layered embeddings and
``embedding_matrix``, the students' ``return_embedding`` and the WavLM teacher's per-layer frame means."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from serkd import distill, models
from serkd.data import teacher_outputs
from serkd.data.teacher_outputs import TeacherOutputs, embedding_matrix
from serkd.distill.rkd import rkd_terms
from serkd.errors import SerkdError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FEATURE_METHODS = ("fitnet", "pkt", "sp", "rkd_emb")
RELATIONAL = ("pkt", "sp", "rkd_emb")  # within-batch relations: no projector, dims may differ


def batch(b: int = 12, c: int = 5, ds: int = 16, dt: int = 24, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    zs = torch.randn(b, c, generator=g, dtype=dtype).requires_grad_()
    zt = 2 * torch.randn(b, c, generator=g, dtype=dtype)
    y = torch.randint(0, c, (b,), generator=g)
    es = torch.randn(b, ds, generator=g, dtype=dtype).requires_grad_()
    et = 3 * torch.randn(b, dt, generator=g, dtype=dtype) + 1
    return zs, zt, y, es, et


def method(name: str, ds: int = 16, dt: int = 24, **params):
    m = distill.create(name, **params)
    m.bind(ds, dt)
    return m.double()


# --- the methods -------------------------------------------------------------------------------


def test_feature_methods_are_registered_and_flagged():
    for name in FEATURE_METHODS:
        cls = distill.get(name)
        assert cls.needs_embeddings and cls.needs_teacher and "teacher_layer" in distill.defaults(name)
    assert not any(distill.get(name).needs_embeddings for name in distill.SEED_METHODS)
    distill.create("kd").bind(3, 4)  # a no-op on logit methods


def test_defaults_from_the_papers():
    assert distill.defaults("fitnet")["feat_weight"] == 100
    assert distill.defaults("pkt")["feat_weight"] == 30000
    assert distill.defaults("sp")["feat_weight"] == 3000
    d = distill.defaults("rkd_emb")
    assert (d["distance_weight"], d["angle_weight"], d["feat_weight"]) == (25, 50, 1)
    assert all(distill.defaults(n)["ce_weight"] == 1 and distill.defaults(n)["kd_weight"] == 0
               for n in FEATURE_METHODS)


@pytest.mark.parametrize("name", RELATIONAL)
def test_zero_feature_term_when_student_embedding_equals_teacher(name):
    _, _, _, es, _ = batch()
    m = method(name)
    assert m.feature(es, es.detach()).item() == 0.0


def test_fitnet_identity_projector_gives_zero():
    _, _, _, es, _ = batch(ds=16)
    m = method("fitnet", ds=16, dt=16)
    with torch.no_grad():
        m.projector.weight.copy_(torch.eye(16, dtype=torch.float64))
        m.projector.bias.zero_()
    assert m.feature(es, es.detach()).item() == 0.0


@pytest.mark.parametrize("name", ("pkt", "sp"))
def test_pkt_and_sp_ignore_embedding_scale(name):
    _, _, _, es, et = batch()
    m = method(name)
    base = m.feature(es, et)
    torch.testing.assert_close(m.feature(7.5 * es, et), base)
    torch.testing.assert_close(m.feature(es, 0.01 * et), base)


def test_rkd_emb_ignores_rotation_and_its_distance_term_ignores_scale():
    _, _, _, es, et = batch()
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    m = method("rkd_emb")
    base = m.feature(es, et)
    torch.testing.assert_close(m.feature(es @ rotation, et), base)
    distance, _ = rkd_terms(es, et)
    torch.testing.assert_close(rkd_terms(4.0 * es, et)[0], distance)
    torch.testing.assert_close(rkd_terms(es, 0.2 * et)[0], distance)


@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_gradients_reach_the_student_embedding_not_the_teacher(name):
    zs, zt, y, es, et = batch()
    et.requires_grad_()
    m = method(name)
    m(zs, zt, y, student_emb=es, teacher_emb=et).backward()
    assert es.grad is not None and torch.isfinite(es.grad).all() and es.grad.abs().sum() > 0
    assert et.grad is None
    if name == "fitnet":
        assert m.projector.weight.grad.abs().sum() > 0 and m.projector.bias.grad.abs().sum() > 0
        assert {id(p) for p in m.parameters()} == {id(m.projector.weight), id(m.projector.bias)}
    else:
        assert not list(m.parameters())


def test_fitnet_projector_is_seeded_by_the_global_seed():
    weights = []
    for _ in range(2):
        torch.manual_seed(5)
        m = distill.create("fitnet")
        m.bind(8, 12)
        weights.append(m.projector.weight.detach().clone())
    assert torch.equal(*weights) and weights[0].shape == (12, 8)


@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_combination_weights(name):
    zs, zt, y, es, et = batch()
    ce = F.cross_entropy(zs, y)
    # feat_weight = 0: exactly CE, and exactly textbook KD with kd_weight = alpha
    assert torch.equal(method(name, feat_weight=0)(zs, zt, y, student_emb=es, teacher_emb=et), ce)
    kd = distill.create("kd", temp=4.0, alpha=0.5, kl_reduction="batchmean")(zs, zt, y)
    both = method(name, feat_weight=0, ce_weight=0.5, kd_weight=0.5, temp=4.0)
    assert torch.equal(both(zs, zt, y, student_emb=es, teacher_emb=et), kd)
    m = method(name, feat_weight=2.0, ce_weight=0.3)
    torch.testing.assert_close(m(zs, zt, y, student_emb=es, teacher_emb=et), 0.3 * ce + 2.0 * m.feature(es, et))


@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_missing_embeddings_are_one_line_errors(name):
    zs, zt, y, es, et = batch()
    m = method(name)
    for kwargs, side in (({"teacher_emb": et}, "student_emb"), ({"student_emb": es}, "teacher_emb")):
        with pytest.raises(ValueError, match=side) as err:
            m(zs, zt, y, **kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="student_emb"):
        m(zs, zt, y, student_emb=es[:3], teacher_emb=et)


def test_fitnet_without_bind_and_bad_teacher_layer_are_errors():
    zs, zt, y, es, et = batch()
    with pytest.raises(ValueError, match="bind"):
        distill.create("fitnet")(zs.float(), zt.float(), y, student_emb=es.float(), teacher_emb=et.float())
    with pytest.raises(ValueError, match="teacher_layer"):
        distill.create("pkt", teacher_layer="middle")
    assert distill.create("sp", teacher_layer="6").teacher_layer == 6


def test_logit_methods_keep_their_signature():
    zs, zt, y, _, _ = batch()
    assert torch.isfinite(distill.create("ckd").double()(zs, zt, y))


# --- the teacher store --------------------------------------------------------------------------


def layered_outputs(n: int = 5, layers: int = 4, d: int = 6) -> TeacherOutputs:
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((n, layers, d)).astype(np.float16)
    return TeacherOutputs([f"u{i}" for i in range(n)], rng.standard_normal((n, 3)).astype(np.float32),
                          {"layer_weights": [0.5, -1.0, 2.0, 0.0], "embedding_layers": layers}, emb,
                          rng.standard_normal((n, 3)).astype(np.float32))


def test_embedding_matrix_picks_a_layer_or_the_weighted_sum(tmp_path):
    out = layered_outputs()
    emb = out.embeddings.astype(np.float64)
    np.testing.assert_array_equal(embedding_matrix(out, 2, tmp_path), emb[:, 2].astype(np.float32))
    np.testing.assert_array_equal(embedding_matrix(out, -1, tmp_path), emb[:, 3].astype(np.float32))
    np.testing.assert_array_equal(embedding_matrix(out, "1", tmp_path), emb[:, 1].astype(np.float32))
    w = np.exp([0.5, -1.0, 2.0, 0.0])
    w /= w.sum()
    hand = sum(w[layer] * emb[:, layer] for layer in range(4))
    for choice in (None, "weighted"):
        got = embedding_matrix(out, choice, tmp_path)
        assert got.dtype == np.float32 and got.shape == (5, 6)
        np.testing.assert_allclose(got, hand, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(embedding_matrix(out, "pooled", tmp_path), out.pooled)
    with pytest.raises(SerkdError, match="out of range"):
        embedding_matrix(out, 4, tmp_path)


def test_embedding_matrix_of_a_two_dimensional_store(tmp_path):
    out = layered_outputs()
    flat = TeacherOutputs(out.utt_ids, out.logits, {}, out.pooled.copy())
    for choice in (None, "pooled"):
        np.testing.assert_array_equal(embedding_matrix(flat, choice, tmp_path), out.pooled)
    with pytest.raises(SerkdError, match="no layers"):
        embedding_matrix(flat, 3, tmp_path)


def test_store_round_trip_and_store_without_embeddings(tmp_path):
    out = layered_outputs()
    teacher_outputs.write_fold(tmp_path, "fold-a", out.utt_ids, out.logits, out.meta, embeddings=out.embeddings,
                               pooled=out.pooled, embedding_dtype="float16")
    back = teacher_outputs.read_fold(tmp_path, "fold-a")
    assert back.embeddings.dtype == np.float16 and back.embeddings.shape == (5, 4, 6)
    np.testing.assert_array_equal(back.pooled, out.pooled)
    np.testing.assert_array_equal(embedding_matrix(back, 1, tmp_path / "fold-a"), out.embeddings[:, 1])

    teacher_outputs.write_fold(tmp_path, "fold-b", out.utt_ids, out.logits, {})
    bare = teacher_outputs.read_fold(tmp_path, "fold-b")
    assert bare.embeddings is None and bare.pooled is None
    with pytest.raises(SerkdError) as err:
        embedding_matrix(bare, None, tmp_path / "fold-b", method="pkt")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(tmp_path / "fold-b")) and "no embeddings" in msg and "pkt" in msg


# --- students -----------------------------------------------------------------------------------


def test_lightsernet_returns_its_pooled_embedding():
    torch.manual_seed(0)
    model = models.create("lightsernet", num_classes=4).eval()
    x = torch.randn(2, 1, 64, 40)
    logits, emb = model(x, return_embedding=True)
    assert model.embedding_dim == 320 and emb.shape == (2, 320) and logits.shape == (2, 4)
    assert torch.equal(model(x), logits)
    torch.testing.assert_close(model.head[-1](emb), logits)
    soft = models.create("lightsernet", num_classes=4, seed_softmax=True).eval()
    probs, _ = soft(x, return_embedding=True)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2))


def test_timm_student_returns_its_backbone_output():
    torch.manual_seed(0)
    model = models.create("mobilenetv3_small_050", num_classes=3).eval()
    x = torch.randn(2, 1, 64, 32)
    logits, emb = model(x, return_embedding=True)
    assert model.embedding_dim == 128 and emb.shape == (2, 128) and logits.shape == (2, 3)
    assert torch.equal(model(x), logits)
    torch.testing.assert_close(model.classifier(emb), logits)


# --- the WavLM teacher's layers ------------------------------------------------------------------


def frames_of(samples: int, config) -> int:
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        samples = (samples - kernel) // stride + 1
    return samples


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")  # WavLM's, in the hand pass
@pytest.mark.parametrize("lengths", [(8000, 8000), (8000, 5000)], ids=["unpadded", "padded"])
def test_wavlm_layer_means_against_a_hand_computation(lengths):
    from serkd.models.wavlm_teacher import build, wavlm_config

    torch.manual_seed(0)
    config = wavlm_config("tiny")
    teacher = build(config, ["a", "b", "c"]).eval()
    with torch.no_grad():
        teacher.model.layer_weights.copy_(torch.tensor([0.3, -0.2, 1.0]))
    rng = np.random.default_rng(0)
    inputs = teacher.inputs([rng.standard_normal(n).astype(np.float32) for n in lengths])
    with torch.no_grad():
        logits, pooled, means = teacher.forward_layers(**inputs)
        hidden = teacher.model(**inputs, output_hidden_states=True).hidden_states
        assert torch.equal(teacher(**inputs)[0], logits)
    assert means.shape == (2, config.num_hidden_layers + 1, config.hidden_size)
    for b, n in enumerate(lengths):
        frames = frames_of(n, config)
        hand = torch.stack([h[b, :frames].mean(dim=0) for h in hidden])
        torch.testing.assert_close(means[b], hand)
    assert teacher.layer_weights() == pytest.approx([0.3, -0.2, 1.0])
    # the projector is linear: the pooled vector is the projected weighted sum of the layer means
    weighted = (torch.softmax(teacher.model.layer_weights, 0).view(1, -1, 1) * means).sum(dim=1)
    torch.testing.assert_close(teacher.model.projector(weighted), pooled, rtol=1e-4, atol=1e-5)
