"""`make demo`: the paper in miniature on the synthetic corpus, offline, on a laptop CPU.

synthetic corpus -> Light-SERNet+ students per fold -> one WA/UA table (mean ± std over folds).
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
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    out = args.out.resolve()
    os.environ.setdefault("SERKD_CACHE", str(out / "cache"))
    started = time.perf_counter()
    corpus = out / "corpus"
    common = ["--corpus", "synth", "--root", str(corpus), "--folds", "0,1,2", "--epochs", str(args.epochs),
              "--length", "16000", "--seed", "0"]
    step("synthetic corpus", ["synth", str(corpus), "--speakers", "6", "--per-class", "8", "--seed", "0"])
    step("corpus summary", ["corpus", "synth", str(corpus), "--no-audio-check"])
    runs = []
    for method in ["ce"]:
        run_dir = out / "runs" / f"lightsernet-{method}"
        step(f"Light-SERNet+ with {method}", ["train", *common, "--student", "lightsernet", "--method", method,
                                               "--out", str(run_dir)])
        runs.append(str(run_dir))
    print("\n== Result: synthetic corpus, 3 speaker folds, best epoch on the validation speaker ==")
    serkd(["report", *runs])
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; outputs under {out}")
    print(f"  runs: {out / 'runs'}  (per fold: model.safetensors, checkpoint.json, results.json)")
    print(f"  JSON report: serkd report {' '.join(runs)} --json")


if __name__ == "__main__":
    main()
