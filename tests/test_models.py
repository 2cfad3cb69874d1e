from __future__ import annotations

import pytest
import torch

from serkd import models
from serkd.errors import SerkdError


def test_lightsernet_matches_the_seed_size_and_returns_logits():
    model = models.create("lightsernet", num_classes=7)
    assert models.count_parameters(model) == 609_975
    model.eval()
    out = model(torch.randn(2, 1, 128, 313))
    assert out.shape == (2, 7)
    assert not torch.allclose(out.sum(dim=1), torch.ones(2))  # logits, not probabilities


def test_lightsernet_seed_softmax_head():
    torch.manual_seed(0)
    model = models.create("lightsernet", num_classes=4, seed_softmax=True).eval()
    probs = model(torch.randn(3, 1, 128, 63))
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(3))
    assert (probs >= 0).all()


@pytest.mark.parametrize("name", ["mobilenetv3_small_075", "resnet18"])
def test_timm_students(name):
    model = models.create(name, num_classes=4).eval()
    assert model.backbone.num_classes == 128
    assert model(torch.randn(2, 1, 128, 63)).shape == (2, 4)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(SerkdError, match="unknown model 'nope'"):
        models.create("nope", num_classes=4)


# ------------------------------------------------------------------ pooling for SER and the tiny student
@pytest.mark.parametrize("pooling", ["stats", "attentive"])
def test_time_pooling_keeps_frequency_and_pools_time_only(pooling):
    from serkd.models._pooling import STATS_BANDS, TimePooling

    torch.manual_seed(0)
    pool = TimePooling(3, pooling).eval()
    x = torch.randn(2, 3, 4, 10)
    out = pool(x)
    assert out.shape == (2, 2 * 3 * STATS_BANDS) == (2, pool.out_dim)
    # the order of frames does not matter (pooled over time), the order of frequency bands does
    torch.testing.assert_close(pool(x.flip(-1)), out)
    assert not torch.allclose(pool(x.flip(-2)), out)
    if pooling == "stats":
        torch.testing.assert_close(out[:, :12], x.flatten(1, 2).mean(-1))
        torch.testing.assert_close(out[:, 12:], torch.sqrt(x.flatten(1, 2).var(-1, unbiased=False) + 1e-5))
    # any height maps to the same bands: the head's size does not depend on the feature kind
    assert pool(torch.randn(2, 3, 2, 7)).shape == pool(torch.randn(2, 3, 5, 7)).shape == out.shape


@pytest.mark.parametrize("name", ["lightsernet", "mobilenetv3_small_075", "tiny"])
def test_pooling_option_of_students(name):
    torch.manual_seed(0)
    baseline = models.create(name, num_classes=7) if name != "tiny" else None
    if name == "lightsernet":
        assert models.count_parameters(baseline) == 609_975  # global: today's model
    for pooling in ("stats", "attentive"):
        model = models.create(name, num_classes=7, pooling=pooling)
        logits, embedding = model(torch.randn(2, 1, 128, 63), return_embedding=True)
        assert logits.shape == (2, 7) and embedding.shape == (2, model.embedding_dim)
        logits.sum().backward()  # every parameter is used
        assert all(p.grad is not None for p in model.parameters())
        assert model(torch.randn(2, 1, 40, 126)).shape == (2, 7)  # MFCC-sized input too
    with pytest.raises(ValueError, match="pooling must be one of global, stats, attentive, not 'max'"):
        models.create(name, num_classes=7, pooling="max")  # plan() reports it as student_params


def test_timm_global_pooling_is_todays_student():
    torch.manual_seed(0)
    model = models.create("mobilenetv3_small_075", num_classes=4)
    assert models.count_parameters(model) == 1_147_784 + 4 * 128 + 4  # timm backbone to 128 + linear head
    assert set(models.options("mobilenetv3_small_075")) >= {"pooling", "embed_dim"}


def test_tiny_student_is_small_and_registered():
    assert "tiny" in models.available() and models.options("tiny")["pooling"] == "stats"
    for pooling in ("stats", "attentive", "global"):
        model = models.create("tiny", num_classes=7, pooling=pooling).eval()
        assert models.count_parameters(model) <= 100_000
    model = models.create("tiny", num_classes=7)
    assert models.count_parameters(model) == 51_367
    assert model.eval()(torch.randn(3, 1, 128, 313)).shape == (3, 7)
