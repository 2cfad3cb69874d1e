"""The student training recipe: each option's defining effect, the preset, and the seed recipe unchanged."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from serkd import distill, models
from serkd.config import RECIPES, ConfigError, RunConfig
from serkd.train.augment import AugmentOptions, augment, band_masks, draw_mix, mix_teacher, spec_mask, time_shift
from serkd.train.loop import (
    FitConfig,
    Recipe,
    _mixup_loss,
    balanced_draw,
    batches,
    cosine_factor,
    fit,
    make_scheduler,
    n_batches,
    predict_logits,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(n=40, classes=4, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 32, 24, generator=g), torch.arange(n) % classes, torch.randn(n, classes, generator=g)


# ---------------------------------------------------------------- the seed recipe is the seed's loop, bit for bit
def _seed_fit(model, loss_fn, features, targets, train_idx, config, teacher_logits):
    """serkd's training loop as it was before recipes existed (selection left out): the reference."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    generator = torch.Generator().manual_seed(config.seed)
    losses = []
    for _ in range(config.epochs):
        model.train()
        total, seen = 0.0, 0
        for idx in batches(train_idx, config.batch_size, generator):
            t = teacher_logits[idx] if teacher_logits is not None else None
            loss = loss_fn(model(features[idx]), t, targets[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.detach() * len(idx)
            seen += len(idx)
        losses.append(float(total) / seen)
        predict_logits(model, features, torch.arange(30, 40), torch.device("cpu"))  # as fit's validation pass
    return losses


@pytest.mark.parametrize("method", ["ce", "kd"])
def test_seed_recipe_is_bit_identical_to_the_seed_loop(method):
    x, y, t = _data()
    config = FitConfig(epochs=3, batch_size=8, step_size=2, gamma=0.5)
    teacher = None if method == "ce" else t
    torch.manual_seed(0)
    reference = models.create("lightsernet", num_classes=4)
    expected = _seed_fit(reference, distill.create(method), x, y, torch.arange(30), config, teacher)
    torch.manual_seed(0)
    model = models.create("lightsernet", num_classes=4)
    # a RunConfig at recipe seed (resolved) must be read exactly as the plain FitConfig
    seed_fields = RunConfig(corpus="synth", root="r", out="o").resolved()
    assert Recipe.of(seed_fields) == Recipe.of(config)
    result = fit(model, distill.create(method), x, y, torch.arange(30), torch.arange(30, 40), config, teacher,
                 torch.device("cpu"))
    assert [h["train_loss"] for h in result.history] == expected
    # fit restores the best epoch; the last epoch's weights equal the reference's when the last is the best
    if result.best_epoch == config.epochs:
        for a, b in zip(model.state_dict().values(), reference.state_dict().values(), strict=True):
            assert torch.equal(a, b)


def test_seed_recipe_keeps_the_config_hash():
    plain = RunConfig(corpus="synth", root="r", out="o")
    assert not set(RECIPES["seed"]) & set(plain.resolved().hashed_dict())
    assert "recipe" not in plain.resolved().hashed_dict()
    assert plain.config_hash() == plain.resolved().config_hash()
    assert plain.resolved().config_hash() != plain.replace(recipe="strong").resolved().config_hash()


def test_strong_preset_and_explicit_fields_win():
    config = RunConfig(corpus="synth", root="r", out="o", epochs=30, recipe="strong", mixup=0.3,
                       balanced_sampling=False).resolved()
    assert config.mixup == 0.3 and config.balanced_sampling is False
    assert config.schedule == "cosine" and config.time_shift == RECIPES["strong"]["time_shift"]
    assert config.freq_masks == 2 and config.time_masks == 2
    assert RunConfig(corpus="synth", root="r", out="o", epochs=5, recipe="strong").resolved().warmup_epochs == 1.0
    with pytest.raises(ConfigError, match="warmup_epochs"):
        RunConfig(corpus="synth", root="r", out="o", warmup_epochs=1.0).validate()  # step schedule
    with pytest.raises(ConfigError, match="freq_mask_width"):
        RunConfig(corpus="synth", root="r", out="o", freq_mask_width=2.0).validate()


def test_recipe_flags_reach_the_config():
    import argparse

    from serkd.cli.config_args import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, RunConfig)
    args = parser.parse_args(["--corpus", "synth", "--root", "r", "--out", "o", "--recipe", "strong",
                              "--no-balanced-sampling", "--mixup", "0.2"])
    config = config_from_args(RunConfig, args).resolved()
    assert config.recipe == "strong" and config.balanced_sampling is False and config.mixup == 0.2
    assert config.schedule == "cosine"


# ---------------------------------------------------------------- augmentation
def test_masks_fill_exactly_their_bands():
    x = torch.randn(6, 1, 40, 50)
    options = AugmentOptions(freq_masks=2, freq_mask_width=0.2)
    expected = band_masks(6, 40, 2, 8, torch.Generator().manual_seed(5))
    out = spec_mask(x, options, torch.Generator().manual_seed(5))
    fill = x.mean(dim=(1, 2, 3))
    for i in range(6):
        inside = expected[i]
        assert torch.equal(out[i, 0, ~inside], x[i, 0, ~inside])  # untouched outside the bands
        assert torch.all(out[i, 0, inside] == fill[i])  # every bin of a band, every frame
    assert expected.any()
    # bands are at most max_width wide and there are at most `count` of them
    masks = band_masks(500, 40, 1, 8, torch.Generator().manual_seed(1))
    assert masks.sum(dim=1).max() <= 8
    time = spec_mask(x, AugmentOptions(time_masks=1, time_mask_width=0.1), torch.Generator().manual_seed(2))
    touched = (time != x).any(dim=2).squeeze(1)  # (B, T): frames a time mask covers
    assert touched.sum(dim=1).max() <= 5  # 10 % of 50 frames
    for i in range(6):  # a masked frame is masked in every bin
        assert torch.all(time[i, 0][:, touched[i]] == x[i].mean())


def test_time_shift_rolls_each_example_and_differs_between_epochs():
    x = torch.randn(8, 1, 4, 30)
    g = torch.Generator().manual_seed(0)
    first, second = time_shift(x, 1.0, g), time_shift(x, 1.0, g)
    for out in (first, second):
        for i in range(8):
            assert any(torch.equal(torch.roll(x[i], s, dims=-1), out[i]) for s in range(30))
    assert not torch.equal(first, second)
    small = time_shift(x, 0.1, torch.Generator().manual_seed(0))  # at most 3 frames either way
    for i in range(8):
        assert any(torch.equal(torch.roll(x[i], s, dims=-1), small[i]) for s in range(-3, 4))
    assert augment(x, AugmentOptions()) is x  # the seed recipe: nothing, no random draws


def test_mixup_inputs_and_teacher_targets_are_convex_combinations():
    x, _, t = _data(n=8)
    mix = draw_mix(8, 0.4, torch.Generator().manual_seed(0))
    assert 0 <= mix.lam <= 1 and sorted(mix.perm.tolist()) == list(range(8))
    assert torch.allclose(mix.inputs(x), mix.lam * x + (1 - mix.lam) * x[mix.perm])
    mixed = mix_teacher(t, mix)
    p = F.softmax(t, dim=1)
    assert torch.allclose(mixed.exp(), mix.lam * p + (1 - mix.lam) * p[mix.perm], atol=1e-6)
    assert torch.isfinite(mix_teacher(torch.tensor([[0.0, -1e4], [-1e4, 0.0]]), draw_mix(2, 1.0))).all()


def test_mixup_ce_loss_is_the_convex_combination_of_two_ce_terms():
    x, y, _ = _data(n=8)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 24, 4))
    loss = _mixup_loss(model, distill.create("ce"), x, y, None, None, 0.4, torch.Generator().manual_seed(7))
    mix = draw_mix(8, 0.4, torch.Generator().manual_seed(7))
    z = model(mix.inputs(x))
    expected = mix.lam * F.cross_entropy(z, y) + (1 - mix.lam) * F.cross_entropy(z, y[mix.perm])
    assert torch.allclose(loss, expected)


def test_augmented_training_leaves_features_and_evaluation_unchanged():
    x, y, _ = _data()
    before = x.clone()
    config = FitConfig(epochs=2, batch_size=8, time_shift=1.0, freq_masks=2, freq_mask_width=0.2, time_masks=2,
                       time_mask_width=0.1, mixup=0.4)
    torch.manual_seed(0)
    model = models.create("lightsernet", num_classes=4)
    fit(model, distill.create("ce"), x, y, torch.arange(30), torch.arange(30, 40), config, None, torch.device("cpu"))
    assert torch.equal(x, before)
    first = predict_logits(model, x, torch.arange(30, 40), torch.device("cpu"))
    again = predict_logits(model, x, torch.arange(30, 40), torch.device("cpu"))
    assert (first == again).all()  # evaluation sees the centre crop, unaugmented, deterministically


# ---------------------------------------------------------------- sampling, schedule, early stopping
def test_balanced_sampling_balances_classes():
    targets = torch.tensor([0] * 90 + [1] * 10)
    drawn = targets[balanced_draw(targets, torch.Generator().manual_seed(0))]
    counts = torch.bincount(drawn, minlength=2)
    assert len(drawn) == 100 and abs(int(counts[0]) - int(counts[1])) < 25  # 90/10 without balancing


def test_cosine_schedule_with_warmup():
    assert [cosine_factor(s, 100, 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert cosine_factor(4, 100, 4) == 1.0
    assert math.isclose(cosine_factor(52, 100, 4), 0.5)
    assert cosine_factor(100, 100, 4) == pytest.approx(0.0)
    assert all(cosine_factor(s + 1, 100, 4) <= cosine_factor(s, 100, 4) for s in range(4, 100))
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    config = FitConfig(epochs=10, schedule="cosine", warmup_epochs=1.0)
    scheduler = make_scheduler(optimizer, config, Recipe.of(config), steps_per_epoch=4)
    lrs = []
    for _ in range(40):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0] and lrs[4] == 1.0 and lrs[-1] < 0.01
    assert n_batches(17, 8) == 2 and n_batches(16, 8) == 2 and n_batches(1, 8) == 1 and n_batches(20, 8) == 3


class _Constant(torch.nn.Module):
    """Logits that never change the prediction: validation UA stays flat."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.tensor([5.0, 0.0, 0.0, 0.0]))

    def forward(self, x):
        return self.bias.expand(len(x), 4) + 0 * x.mean()


def test_early_stopping_stops_and_restores_the_best_epoch():
    x, y, _ = _data()
    model = _Constant()
    config = FitConfig(epochs=10, batch_size=8, lr=1e-4, patience=2)
    result = fit(model, distill.create("ce"), x, y, torch.arange(30), torch.arange(30, 40), config, None,
                 torch.device("cpu"))
    assert len(result.history) == 3 < config.epochs  # best at 1, two epochs without progress
    assert result.best_epoch == 1
    assert torch.equal(model.bias.detach(), result.best_state["bias"])
