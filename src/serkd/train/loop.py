"""The training loop for one fold: the seed's optimiser and schedule, selection on validation UA.

Seed defaults: Adam (lr 1e-3, weight decay 1e-4), StepLR stepped every *batch* (step 300, gamma 0.9),
batch 16. Features live in memory as one tensor; a batch is an index gather, so an epoch costs little
more than the model's own forward and backward passes.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from serkd.train.metrics import wa_ua


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    step_size: int = 300  # batches, as the seed steps its scheduler per batch
    gamma: float = 0.9
    seed: int = 0


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


@torch.no_grad()
def predict_logits(model: torch.nn.Module, features: torch.Tensor, indices, device, batch_size: int = 64):
    model.eval()
    indices = torch.as_tensor(indices, dtype=torch.long)
    out = [model(features[idx].to(device, non_blocking=True)).float().cpu() for idx in batches(indices, batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def fit(
    model: torch.nn.Module,
    loss_fn: Callable,
    features: torch.Tensor,
    targets: torch.Tensor,
    train_idx,
    valid_idx,
    config: FitConfig,
    teacher_logits: torch.Tensor | None = None,
    device: torch.device | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> FitResult:
    """Train for ``config.epochs``; keep the weights of the epoch with the best validation UA
    (ties go to the earlier epoch)."""
    device = device or pick_device()
    model.to(device)
    loss_fn.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    generator = torch.Generator().manual_seed(config.seed)
    train_idx = torch.as_tensor(train_idx, dtype=torch.long)
    valid_targets = targets[torch.as_tensor(valid_idx, dtype=torch.long)].numpy()
    best: FitResult | None = None
    history = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        started = time.perf_counter()
        total, seen = 0.0, 0
        for idx in batches(train_idx, config.batch_size, generator):
            x = features[idx].to(device, non_blocking=True)
            y = targets[idx].to(device, non_blocking=True)
            t = teacher_logits[idx].to(device, non_blocking=True) if teacher_logits is not None else None
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
        if best is None or valid_ua > history[best.best_epoch - 1]["valid_ua"]:
            best = FitResult(epoch, copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()}))
        if on_epoch:
            on_epoch(record)
    assert best is not None, "epochs must be >= 1"
    best.history = history
    model.load_state_dict(best.best_state)
    return best
