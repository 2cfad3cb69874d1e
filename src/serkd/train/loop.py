"""The training loop for one fold: the seed's optimiser and schedule, selection on validation UA.

Seed defaults: Adam (lr 1e-3, weight decay 1e-4), StepLR stepped every *batch* (step 300, gamma 0.9),
batch 16. Features live in memory as one tensor; a batch is an index gather, so an epoch costs little
more than the model's own forward and backward passes.

The recipe options (``RunConfig.recipe``; all off in the seed recipe, which then runs exactly the seed's
loop and draws exactly the seed's random numbers): class-balanced sampling, a cosine schedule with linear
warm-up stepped per batch, early stopping on validation UA, and the batch augmentations of
``train/augment.py`` (time shift, SpecAugment, mixup), which draw from their own generator.
"""

from __future__ import annotations

import copy
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from serkd.config import RECIPES, SEED_TRAINING
from serkd.train.augment import AugmentOptions, augment, draw_mix, mix_teacher
from serkd.train.metrics import wa_ua

_SEED, _RECIPE = SEED_TRAINING, RECIPES["seed"]  # the defaults, written once in serkd.config


@dataclass(frozen=True)
class FitConfig:
    epochs: int = _SEED["epochs"]
    batch_size: int = _SEED["batch_size"]
    lr: float = _SEED["lr"]
    weight_decay: float = _SEED["weight_decay"]
    step_size: int = _SEED["step_size"]  # batches, as the seed steps its scheduler per batch
    gamma: float = _SEED["gamma"]
    seed: int = 0
    # the recipe (RunConfig's fields of the same names); these defaults are the seed recipe
    time_shift: float = _RECIPE["time_shift"]
    freq_masks: int = _RECIPE["freq_masks"]
    freq_mask_width: float = _RECIPE["freq_mask_width"]
    time_masks: int = _RECIPE["time_masks"]
    time_mask_width: float = _RECIPE["time_mask_width"]
    mixup: float = _RECIPE["mixup"]
    balanced_sampling: bool = _RECIPE["balanced_sampling"]
    schedule: str = _RECIPE["schedule"]
    warmup_epochs: float = _RECIPE["warmup_epochs"]
    patience: int = _RECIPE["patience"]


@dataclass(frozen=True)
class Recipe:
    """The recipe options :func:`fit` reads from any config (absent or None: the seed's, off)."""

    augment: AugmentOptions
    mixup: float
    balanced_sampling: bool
    schedule: str
    warmup_epochs: float
    patience: int

    @classmethod
    def of(cls, config) -> Recipe:
        seed = FitConfig()

        def get(name):
            value = getattr(config, name, None)
            return getattr(seed, name) if value is None else value

        return cls(AugmentOptions(*(get(n) for n in ("time_shift", "freq_masks", "freq_mask_width", "time_masks",
                                                       "time_mask_width"))),
                   get("mixup"), get("balanced_sampling"), get("schedule"), get("warmup_epochs"), get("patience"))


class FitOptions(Protocol):
    """What :func:`fit` reads: a FitConfig, or a RunConfig (which has the same fields)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    step_size: int
    gamma: float
    seed: int


class BestEpoch:
    """Keeps the weights of the epoch with the best validation UA; ties go to the earlier epoch.

    The one selection rule of every training loop (students, CNN and WavLM teachers).
    """

    def __init__(self) -> None:
        self.epoch = 0
        self.valid_ua = float("-inf")
        self.state: dict | None = None

    def update(self, epoch: int, valid_ua: float, model: torch.nn.Module) -> bool:
        if self.state is not None and not valid_ua > self.valid_ua:
            return False
        self.epoch, self.valid_ua = epoch, valid_ua
        self.state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        return True

    def restore(self, model: torch.nn.Module) -> None:
        if self.state is None:
            raise RuntimeError("no epoch was trained")
        model.load_state_dict(self.state)


@dataclass
class FitResult:
    best_epoch: int
    best_state: dict
    history: list[dict] = field(default_factory=list)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def batches(indices: torch.Tensor, batch_size: int, generator: torch.Generator | None = None):
    """Index batches; shuffled when a generator is given. A trailing batch of one is merged
    into the previous one, because BatchNorm cannot train on a single example."""
    order = indices[torch.randperm(len(indices), generator=generator)] if generator is not None else indices
    starts = list(range(0, len(order), batch_size))
    if len(starts) > 1 and len(order) - starts[-1] == 1:
        starts.pop()
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(order)
        yield order[start:end]


def n_batches(n: int, batch_size: int) -> int:
    """How many batches :func:`batches` yields for ``n`` examples."""
    count = math.ceil(n / batch_size)
    return count - 1 if count > 1 and n % batch_size == 1 else count


def balanced_draw(targets: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Positions 0..n-1 drawn n times with replacement, each with probability 1 / (its class's size * classes
    present): every class is drawn equally often in expectation."""
    counts = torch.bincount(targets)
    weights = 1.0 / counts[targets].double()
    return torch.multinomial(weights, len(targets), replacement=True, generator=generator)


def cosine_factor(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor at optimiser step ``step`` (0-based) of ``total``: linear warm-up reaching 1 at
    step ``warmup - 1``, then a half cosine from 1 down to 0 at step ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup, total - warmup) / max(total - warmup, 1)))


def make_scheduler(optimizer, config, recipe: Recipe, steps_per_epoch: int):
    if recipe.schedule == "cosine":
        total = config.epochs * steps_per_epoch
        warmup = round(recipe.warmup_epochs * steps_per_epoch)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_factor(step, total, warmup))
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)


RESIDENT_FRACTION = 0.5  # of a GPU's free memory: the most the corpus' features may take there


def to_device_once(device: torch.device, features, *tensors):
    """``features`` and ``tensors`` (labels, teacher outputs) as the training loop should index them on ``device``.

    On a GPU, once per unit instead of a host gather and copy per batch (which leaves a small student's GPU
    waiting on the host): the tensors always, the features as one float32 tensor when they take at most
    ``RESIDENT_FRACTION`` of the device's free memory, copied in chunks so the host never holds them all
    widened. On the CPU, or when they do not fit, everything is returned as it is."""
    if device.type != "cuda":
        return (features, *tensors)
    moved = tuple(t.to(device) if t is not None else None for t in tensors)
    nbytes = 4 * math.prod(features.shape)
    if nbytes > RESIDENT_FRACTION * torch.cuda.mem_get_info(device)[0]:
        return (features, *moved)
    resident = torch.empty(tuple(features.shape), dtype=torch.float32, device=device)
    for start in range(0, len(features), 1024):
        rows = torch.arange(start, min(start + 1024, len(features)))
        resident[start : start + len(rows)] = features[rows].to(device, torch.float32)
    return (resident, *moved)


def _takes_embedding_flag(model: torch.nn.Module) -> bool:
    return "return_embedding" in inspect.signature(model.forward).parameters


@torch.no_grad()
def predict_logits(model: torch.nn.Module, features: torch.Tensor, indices, device, batch_size: int = 64,
                   with_embeddings: bool = False):
    """Logits [N, C] in ``indices`` order; with ``with_embeddings`` also the embeddings before the classifier
    ([N, D], or None for a model that cannot give them)."""
    model.eval()
    indices = torch.as_tensor(indices, dtype=torch.long)
    embed = with_embeddings and _takes_embedding_flag(model)
    logits, embeddings = [], []
    for idx in batches(indices, batch_size):
        x = features[idx].to(device, non_blocking=True)
        if embed:
            z, e = model(x, return_embedding=True)
            embeddings.append(e.float())
        else:
            z = model(x)
        logits.append(z.float())  # to the host once at the end: no device sync per batch
    out = torch.cat(logits).cpu().numpy() if logits else np.zeros((0, 0), dtype=np.float32)
    if not with_embeddings:
        return out
    return out, (torch.cat(embeddings).cpu().numpy() if embeddings else None)


def fit(
    model: torch.nn.Module,
    loss_fn: Callable,
    features: torch.Tensor,
    targets: torch.Tensor,
    train_idx,
    valid_idx,
    config: FitOptions,
    teacher_logits: torch.Tensor | None = None,
    device: torch.device | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    teacher_embeddings: torch.Tensor | None = None,
) -> FitResult:
    """Train for ``config.epochs`` (fewer with early stopping); keep the weights of the epoch with the best
    validation UA (ties go to the earlier epoch). The recipe options are read from ``config`` (:class:`Recipe`).

    A feature-KD loss (``needs_embeddings``) also gets the student's embedding and the teacher's
    cached one; its own parameters (a projector) are bound to both sizes and trained with the model.
    """
    device = device or pick_device()
    feature_kd = getattr(loss_fn, "needs_embeddings", False)
    if feature_kd:
        if teacher_embeddings is None:
            raise ValueError("a feature-KD method needs teacher embeddings")
        loss_fn.bind(model.embedding_dim, int(teacher_embeddings.shape[1]))
    model.to(device)
    loss_fn.to(device)
    features, batch_targets, teacher_logits, teacher_embeddings = to_device_once(
        device, features, targets, teacher_logits, teacher_embeddings)
    parameters = [*model.parameters(), *loss_fn.parameters()]
    recipe = Recipe.of(config)
    train_idx = torch.as_tensor(train_idx, dtype=torch.long)
    optimizer = torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = make_scheduler(optimizer, config, recipe, n_batches(len(train_idx), config.batch_size))
    generator = torch.Generator().manual_seed(config.seed)
    # augmentation draws from its own stream: the order of batches is the same with and without it
    augment_rng = torch.Generator().manual_seed(config.seed + 1_000_003)
    train_targets = targets[train_idx]
    valid_targets = targets[torch.as_tensor(valid_idx, dtype=torch.long)].numpy()
    best = BestEpoch()
    history = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        started = time.perf_counter()
        total, seen = 0.0, 0
        if recipe.balanced_sampling:
            epoch_batches = batches(train_idx[balanced_draw(train_targets, generator)], config.batch_size)
        else:
            epoch_batches = batches(train_idx, config.batch_size, generator)
        for idx in epoch_batches:
            x = features[idx].to(device, non_blocking=True)
            y = batch_targets[idx].to(device, non_blocking=True)
            t = teacher_logits[idx].to(device, non_blocking=True) if teacher_logits is not None else None
            t_emb = teacher_embeddings[idx].to(device, non_blocking=True) if feature_kd else None
            if recipe.augment.active:
                x = augment(x, recipe.augment, augment_rng)
            if recipe.mixup > 0:
                loss = _mixup_loss(model, loss_fn, x, y, t, t_emb, recipe.mixup, augment_rng)
            elif feature_kd:
                z, embedding = model(x, return_embedding=True)
                loss = loss_fn(z, t, y, student_emb=embedding, teacher_emb=t_emb)
            else:
                loss = loss_fn(model(x), t, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.detach() * len(idx)  # stays on device: no sync per batch
            seen += len(idx)
        train_loss = float(total) / max(seen, 1)  # one device sync per epoch
        trained = time.perf_counter()
        predictions = predict_logits(model, features, valid_idx, device).argmax(axis=1)
        valid_wa, valid_ua = wa_ua(valid_targets, predictions)
        record = {"epoch": epoch, "train_loss": train_loss, "valid_wa": valid_wa, "valid_ua": valid_ua,
                  "lr": scheduler.get_last_lr()[0], "train_s": trained - started,
                  "valid_s": time.perf_counter() - trained}
        history.append(record)
        best.update(epoch, valid_ua, model)
        loss_fn.train()
        if on_epoch:
            on_epoch(record)
        if recipe.patience and epoch - best.epoch >= recipe.patience:
            break  # early stopping: no better validation UA for `patience` epochs
    if best.state is None:
        raise ValueError("epochs must be >= 1")
    best.restore(model)
    return FitResult(best.epoch, best.state, history)


def _mixup_loss(model, loss_fn, x, y, t, t_emb, alpha: float, generator: torch.Generator) -> torch.Tensor:
    """Mixup for any method: inputs and teacher outputs mixed alike (teacher probabilities, see
    :func:`~serkd.train.augment.mix_teacher`; embeddings linearly); the hard targets enter as
    lam * L(y_a) + (1 - lam) * L(y_b), the convex combination of the two losses (for CE exactly mixup's
    loss; for KD methods their teacher terms see the one mixed teacher target in both)."""
    mix = draw_mix(len(y), alpha, generator)
    x = mix.inputs(x)
    t = mix_teacher(t, mix) if t is not None else None
    if t_emb is not None:
        embedding_kw = {"teacher_emb": mix.inputs(t_emb)}
        z, embedding_kw["student_emb"] = model(x, return_embedding=True)
    else:
        embedding_kw = {}
        z = model(x)
    return mix.lam * loss_fn(z, t, y, **embedding_kw) + (1 - mix.lam) * loss_fn(z, t, y[mix.perm], **embedding_kw)
