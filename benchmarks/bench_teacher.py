"""Teacher against student inference cost on 5 s clips, on the CPU in float32.

    .venv/bin/python benchmarks/bench_teacher.py [--out benchmarks/results/bench_teacher.json]
                                                 [--batch 8 --repeats 5 --threads N]

1. WavLM teacher throughput (utterances/s) on 5 s clips at batch 1 and ``--batch``: the tiny test
   config (``serkd teacher tiny-wavlm``) and the WavLM Base+ architecture built from its config values
   (hidden 768, 12 layers, 12 heads, intermediate 3072, 7 conv layers of 512 channels), randomly
   initialised: the cost does not depend on the weights, so nothing is downloaded. Each call pads and
   normalises with the feature extractor, then runs the SUPERB-style head serkd fine-tunes
   (weighted layer sum, projector, mean pool, classifier);
2. latency on one 5 s clip: Light-SERNet+ on the 128 x 313 mel (mel computation and model timed
   separately) against both teachers;
3. one fine-tuning step (forward, backward, AdamW) on the CPU at batch 2, feature encoder frozen, for
   scale only. The Base+ fine-tuning step time on a GPU is *not measured*: no GPU was lent to this task.

Times are medians over ``--repeats`` after a warm-up; the minimum is kept beside them because the
machine may be shared (its load average is recorded).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from serkd import models
from serkd.data.features import FeatureConfig, compute_features
from serkd.deploy.bench import time_calls
from serkd.models import wavlm_teacher

CLIP = 80000  # 5 s at 16 kHz, the Emo-DB seed length
LABELS = ["anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"]
GPU_NOTE = "Base+ fine-tuning step time on a GPU: not measured (no GPU was lent to this task)"


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> dict:
    times = time_calls(fn, repeats, warmup)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}


def clips(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(CLIP) / 16000
    return [(0.3 * np.sin(2 * np.pi * rng.uniform(100, 250) * t) + 0.05 * rng.standard_normal(CLIP)).astype(np.float32)
            for _ in range(n)]


def teacher_rows(batch: int, repeats: int) -> tuple[list[dict], dict]:
    rows, built = [], {}
    for size in ("tiny", "base-plus"):
        torch.manual_seed(0)
        teacher = wavlm_teacher.build(wavlm_teacher.wavlm_config(size), LABELS).eval()
        built[size] = teacher
        params = models.count_parameters(teacher)
        for b in (1, batch):
            waves = clips(b)

            @torch.no_grad()
            def infer(teacher=teacher, waves=waves):
                return teacher(**teacher.inputs(waves))

            t = timed(infer, repeats)
            rows.append({"model": f"WavLM {size} (random init)", "size": size, "batch": b, "params": params,
                         **t, "utt_per_s": b / t["median_s"], "ms_per_utt": 1e3 * t["median_s"] / b})
    return rows, built


def latency_rows(teachers: dict, repeats: int) -> list[dict]:
    (wave,) = clips(1)
    config = FeatureConfig("mel", CLIP)
    features = torch.from_numpy(compute_features(wave, config))[None, None]
    student = models.create("lightsernet", num_classes=len(LABELS)).eval()
    mel = timed(lambda: compute_features(wave, config), repeats)
    with torch.no_grad():
        net = timed(lambda: student(features), repeats)
    rows = [{"model": "Light-SERNet+ (mel 128 x 313)", "params": models.count_parameters(student),
             "features_ms": 1e3 * mel["median_s"], "model_ms": 1e3 * net["median_s"],
             "total_ms": 1e3 * (mel["median_s"] + net["median_s"]), "model_min_ms": 1e3 * net["min_s"]}]
    for size, teacher in teachers.items():
        with torch.no_grad():
            inputs = timed(lambda teacher=teacher: teacher.inputs([wave]), repeats)
            x = teacher.inputs([wave])
            net = timed(lambda teacher=teacher, x=x: teacher(**x), repeats)
        rows.append({"model": f"WavLM {size} (waveform)", "params": models.count_parameters(teacher),
                     "features_ms": 1e3 * inputs["median_s"], "model_ms": 1e3 * net["median_s"],
                     "total_ms": 1e3 * (inputs["median_s"] + net["median_s"]), "model_min_ms": 1e3 * net["min_s"]})
    student_ms = rows[0]["total_ms"]
    for row in rows:
        row["vs_student"] = row["total_ms"] / student_ms
    return rows


def train_step_rows(repeats: int) -> list[dict]:
    rows = []
    for size in ("tiny", "base-plus"):
        torch.manual_seed(0)
        teacher = wavlm_teacher.build(wavlm_teacher.wavlm_config(size), LABELS)
        teacher.freeze_feature_encoder()
        teacher.train()
        optimizer = torch.optim.AdamW([p for p in teacher.parameters() if p.requires_grad], lr=1e-5)
        x = teacher.inputs(clips(2))
        y = torch.tensor([0, 1])

        def step(teacher=teacher, optimizer=optimizer, x=x, y=y):
            optimizer.zero_grad(set_to_none=True)
            logits, _ = teacher(**x)
            torch.nn.functional.cross_entropy(logits, y).backward()
            optimizer.step()

        t = timed(step, max(1, repeats // 2 if size == "base-plus" else repeats))
        rows.append({"model": f"WavLM {size}", "batch": 2, "device": "cpu", **t})
    return rows


def show(result: dict, console: Console) -> None:
    table = Table(title="WavLM teacher inference on 5 s clips (CPU, float32, random init)")
    for column in ("model", "params", "batch", "utt/s", "ms/utt", "min ms/utt"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in result["teacher_throughput"]:
        table.add_row(r["model"], f"{r['params']:,}", str(r["batch"]), f"{r['utt_per_s']:.2f}",
                      f"{r['ms_per_utt']:.1f}", f"{1e3 * r['min_s'] / r['batch']:.1f}")
    console.print(table)
    table = Table(title="latency on one 5 s clip: student vs teacher (CPU, batch 1)")
    for column in ("model", "params", "input ms", "model ms", "total ms", "x student"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in result["latency"]:
        table.add_row(r["model"], f"{r['params']:,}", f"{r['features_ms']:.1f}", f"{r['model_ms']:.1f}",
                      f"{r['total_ms']:.1f}", f"{r['vs_student']:.1f}")
    console.print(table)
    table = Table(title="one fine-tuning step, batch 2 x 5 s, feature encoder frozen (CPU, for scale)")
    for column in ("model", "median s", "min s"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in result["train_step_cpu"]:
        table.add_row(r["model"], f"{r['median_s']:.3f}", f"{r['min_s']:.3f}")
    console.print(table)
    console.print(GPU_NOTE)
    console.print(f"threads {result['env']['threads']}, load average at start {result['env']['loadavg']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_teacher.json"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    env = {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
           "threads": torch.get_num_threads(), "loadavg": os.getloadavg(), "torch": torch.__version__,
           "device": "cpu"}
    throughput, teachers = teacher_rows(args.batch, args.repeats)
    result = {"env": env, "clip_seconds": CLIP / 16000, "teacher_throughput": throughput,
              "latency": latency_rows(teachers, args.repeats), "train_step_cpu": train_step_rows(args.repeats),
              "not_measured": [GPU_NOTE]}
    show(result, Console(width=None if sys.stdout.isatty() else 120))  # rich wraps at 80 columns in pipes
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from serkd.io import atomic_write_json

    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
