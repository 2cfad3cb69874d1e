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
