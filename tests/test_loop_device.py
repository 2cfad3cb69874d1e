"""fit keeps the corpus on the GPU once per unit; on the CPU nothing moves (results stay bit-identical)."""

from __future__ import annotations

import pytest
import torch

from serkd import distill, models
from serkd.train.loop import FitConfig, fit, to_device_once


def test_on_the_cpu_nothing_moves():
    features, targets, logits = torch.randn(6, 1, 4, 5), torch.arange(6), torch.randn(6, 3)
    out = to_device_once(torch.device("cpu"), features, targets, logits, None)
    assert out[0] is features and out[1] is targets and out[2] is logits and out[3] is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_the_features_are_resident_and_training_matches_the_cpu():
    device = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    features, targets, logits = torch.randn(40, 1, 32, 24, generator=g), torch.arange(40) % 4, torch.randn(40, 4)
    resident, moved_targets, moved_logits = to_device_once(device, features, targets, logits)
    assert resident.device.type == moved_targets.device.type == moved_logits.device.type == "cuda"
    torch.testing.assert_close(resident.cpu(), features)
    results = []
    for where in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = models.create("lightsernet", num_classes=4)
        fitted = fit(model, distill.create("kd"), features, targets, torch.arange(30), torch.arange(30, 40),
                     FitConfig(epochs=2, batch_size=8), logits, torch.device(where))
        results.append([h["train_loss"] for h in fitted.history])
    assert results[1] == pytest.approx(results[0], rel=1e-2)  # same batches and data; TF32 convolutions differ a little
