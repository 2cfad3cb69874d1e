"""Student epoch time in serkd's training loop vs. the bare model forward+backward on the same batches.

Both sides see the same cached features (in memory), the same batches in the same order, the same
optimiser and loss; the bare side is the minimal loop a researcher would write by hand. serkd's epoch
also runs its per-epoch validation (16 utterances, about an Emo-DB fold's share) and keeps the best
weights: the table gives the training pass alone (the same work as the bare loop) and the whole
epoch. Target: training pass <= 1.15x bare.

    .venv/bin/python benchmarks/bench_pipeline.py [--clips 128 --frames 313 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from serkd import distill, models
from serkd.train.loop import FitConfig, batches, fit

STUDENTS = ("lightsernet", "mobilenetv3_small_075")


def bare_epoch(model, features, targets, order, batch_size) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=300, gamma=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    prepared = [(features[idx], targets[idx]) for idx in batches(order, batch_size)]  # sliced before timing
    model.train()
    started = time.perf_counter()
    for x, y in prepared:
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return time.perf_counter() - started


def serkd_epoch(model, features, targets, train_idx, valid_idx, batch_size, seed) -> tuple[float, float]:
    """(training pass, whole epoch incl. validation and best-weights bookkeeping) in seconds."""
    config = FitConfig(epochs=1, batch_size=batch_size, seed=seed)
    started = time.perf_counter()
    result = fit(model, distill.create("ce"), features, targets, train_idx, valid_idx, config,
                 device=torch.device("cpu"))
    return result.history[0]["train_s"], time.perf_counter() - started


def measure(student: str, clips: int, frames: int, repeats: int, batch_size: int) -> dict:
    torch.manual_seed(0)
    features = torch.randn(clips + 16, 1, 128, frames)
    targets = torch.randint(0, 7, (clips + 16,))
    train_idx, valid_idx = torch.arange(clips), torch.arange(clips, clips + 16)
    model = models.create(student, num_classes=7)
    # the same permutation fit() draws from its seeded generator
    order = train_idx[torch.randperm(clips, generator=torch.Generator().manual_seed(0))]
    bare_epoch(model, features, targets, order, batch_size)  # warm-up: allocator, oneDNN kernels
    bare, train_pass, whole = [], [], []
    for _ in range(repeats):  # interleaved, so machine load hits both sides alike
        bare.append(bare_epoch(model, features, targets, order, batch_size))
        t, w = serkd_epoch(model, features, targets, train_idx, valid_idx, batch_size, seed=0)
        train_pass.append(t)
        whole.append(w)
    bare_s, train_s, whole_s = (statistics.median(x) for x in (bare, train_pass, whole))
    return {"student": student, "clips": clips, "valid_clips": 16, "input": [1, 128, frames],
            "batch_size": batch_size, "bare_epoch_s": bare_s, "serkd_train_pass_s": train_s,
            "serkd_epoch_s": whole_s, "ratio": train_s / bare_s, "ratio_with_validation": whole_s / bare_s,
            "clips_per_s": clips / train_s, "target_ratio": 1.15, "met": train_s / bare_s <= 1.15,
            "bare_runs_s": bare, "serkd_train_pass_runs_s": train_pass, "serkd_epoch_runs_s": whole}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=128)
    parser.add_argument("--frames", type=int, default=313, help="313 = the seed's 5 s mel input")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_pipeline.json")
    args = parser.parse_args()
    rows = [measure(s, args.clips, args.frames, args.repeats, args.batch_size) for s in STUDENTS]
    table = Table(title=f"epoch of {args.clips} clips, 1x128x{args.frames}, batch {args.batch_size}, CPU "
                        f"{torch.get_num_threads()} threads (median of {args.repeats})")
    for column in ("student", "bare fwd+bwd s", "serkd train pass s", "ratio", "serkd epoch+valid s", "ratio",
                   "clips/s", "≤ 1.15×"):
        table.add_column(column, justify="left" if column == "student" else "right")
    for r in rows:
        table.add_row(r["student"], f"{r['bare_epoch_s']:.2f}", f"{r['serkd_train_pass_s']:.2f}",
                      f"{r['ratio']:.3f}", f"{r['serkd_epoch_s']:.2f}", f"{r['ratio_with_validation']:.3f}",
                      f"{r['clips_per_s']:.1f}", "yes" if r["met"] else "NO")
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                    "load_average": os.getloadavg(),
                                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                                    "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
