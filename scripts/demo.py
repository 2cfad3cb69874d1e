"""`make demo`: the paper in miniature on the synthetic corpus, offline, on a laptop CPU.

synthetic corpus -> a WavLM teacher fine-tuned per fold on that fold's training speakers (a *tiny
random-init* WavLM, so it runs offline in seconds: not WavLM Base+) -> Light-SERNet+ students per fold
trained with ce, kd, dkd and ckd from the teacher's stored logits -> one WA/UA table (mean ± std over
folds), the teacher's own test WA/UA included.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from serkd.cli import main as serkd


def step(title: str, argv: list[str]) -> None:
    print(f"\n$ serkd {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    code = serkd(argv)
    if code:
        sys.exit(f"demo step failed: {title}")
    print(f"({title}: {time.perf_counter() - started:.1f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--epochs", type=int, default=6, help="student epochs")
    parser.add_argument("--teacher-epochs", type=int, default=12)
    parser.add_argument("--methods", default="ce,kd,dkd,ckd", help="student losses (serkd.distill.available())")
    args = parser.parse_args()
    out = args.out.resolve()
    os.environ.setdefault("SERKD_CACHE", str(out / "cache"))
    started = time.perf_counter()
    corpus = out / "corpus"
    # 0.75 s students and 144 utterances keep 4 methods x 3 folds well inside 5 minutes on 2 CPU cores
    common = ["--corpus", "synth", "--root", str(corpus), "--folds", "0,1,2", "--seed", "0"]
    step("synthetic corpus", ["synth", str(corpus), "--speakers", "6", "--per-class", "6", "--seed", "0"])
    step("corpus summary", ["corpus", "synth", str(corpus), "--no-audio-check"])
    # the tiny WavLM starts from random weights: it trains its feature encoder too, at a from-scratch learning
    # rate, and needs ~150 optimiser steps to get past telling only high from low arousal
    tiny, teacher = out / "tiny-wavlm", out / "teacher-wavlm-tiny"
    step("tiny random-init WavLM (not WavLM Base+)", ["teacher", "tiny-wavlm", str(tiny)])
    step("teacher per fold: tiny random-init WavLM, not WavLM Base+", [
        "teacher", "train", "--model", str(tiny), *common, "--epochs", str(args.teacher_epochs), "--length", "16000",
        "--batch-size", "8", "--lr", "3e-3", "--head-lr", "3e-3", "--train-feature-encoder", "--out", str(teacher)])
    runs = [str(teacher)]
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        run_dir = out / "runs" / f"lightsernet-{method}"
        distil = [] if method == "ce" else ["--teacher", str(teacher)]
        step(f"Light-SERNet+ with {method}", ["train", *common, "--epochs", str(args.epochs), "--length", "12000",
                                               "--student", "lightsernet", "--method", method, *distil,
                                               "--out", str(run_dir)])
        runs.append(str(run_dir))
    print("\n== Result: synthetic corpus, 3 speaker folds, best epoch on the validation speaker ==")
    print(f"   teacher row ({Path(teacher).name}): a tiny random-init WavLM, not WavLM Base+; WA/UA from its stored "
          "logits on each fold's test speaker")
    serkd(["report", *runs])
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; outputs under {out}")
    print(f"  runs: {out / 'runs'}  (per fold: model.safetensors, checkpoint.json, results.json)")
    print(f"  JSON report: serkd report {' '.join(runs)} --json")


if __name__ == "__main__":
    main()
