"""int8 benchmark: does quantization make a trained student faster on this CPU, and what does it cost in UA?

    python benchmarks/bench_int8.py [--student lightsernet] [--epochs 6] [--speakers 6] [--per-class 20]
                                    [--repeats 30] [--out benchmarks/results/bench_int8.json]

Trains one student on fold 0 of a synthetic corpus (``serkd synth``: 1-2.5 s clips, crop 24000 samples),
exports it as ``serkd export --int8 --int8-static --corpus ...`` does (float32; dynamic int8; static int8
QDQ calibrated on the fold's training utterances), scores each graph on the fold's test speaker (WA/UA, and
how many predictions agree with float32) and times each end to end in onnxruntime on **one thread** on one
clip of the crop length (p50 of ``repeats`` runs). The machine is shared: timings are noisy upper bounds, the
load average is recorded. The synthetic corpus is easy; the UA change is what matters, not the UA.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="lightsernet")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--speakers", type=int, default=6)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_int8.json")
    args = parser.parse_args(argv)
    import torch
    from rich.console import Console
    from rich.table import Table

    from serkd.config import RunConfig
    from serkd.data.audio import load_audio
    from serkd.data.corpora import load_corpus
    from serkd.data.synth import SynthConfig, generate
    from serkd.deploy import bench as b
    from serkd.deploy.predict import OnnxClassifier, evaluate, fold_test_items
    from serkd.deploy.workflow import export_and_evaluate
    from serkd.io import atomic_write_json
    from serkd.train.run import run

    torch.set_num_threads(1)
    console = Console(width=160)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_int8_"))
    corpus = work / "synth"
    if not (corpus / "manifest.csv").is_file():
        generate(corpus, SynthConfig(speakers=args.speakers, per_class=args.per_class, seed=0))
    load_before = list(os.getloadavg())
    config = RunConfig(corpus="synth", root=str(corpus), student=args.student, epochs=args.epochs, folds="0",
                       threads=1, out=str(work / "run"))
    fold = run(config)[0]
    console.print(f"trained {args.student} fold {fold.fold}: test UA {100 * fold.ua:.2f} (torch)")
    summary = export_and_evaluate(work / "run" / fold.fold, work / "model.onnx", int8=True, corpus="synth",
                                  root=corpus, int8_static=True)
    manifest = load_corpus("synth", corpus)
    items = fold_test_items("synth", corpus, fold.test, manifest.labels)
    wave = load_audio(items[0][0])
    wave = np.resize(wave, config.crop_length).astype(np.float32)  # one clip of exactly the crop length
    rows, reference = [], None
    for name, graph in summary["graphs"].items():
        scored = evaluate(OnnxClassifier(graph["path"], threads=1), items)
        reference = scored["predictions"] if reference is None else reference
        latency = b.onnx_latency(graph["path"], wave, 1, args.repeats)
        rows.append({"graph": name, "bytes": graph["bytes"], "wa": scored["wa"], "ua": scored["ua"],
                     "n_test": scored["n"], "agree_with_fp32": float(np.mean(np.array(scored["predictions"])
                                                                            == np.array(reference))),
                     "latency": latency.summary(config.crop_length / 16000)})
    fp32 = rows[0]
    for row in rows:
        row["ua_change_points"] = 100 * (row["ua"] - fp32["ua"])
        row["speedup_vs_fp32"] = fp32["latency"]["p50_ms"] / row["latency"]["p50_ms"]
    result = {"student": args.student, "corpus": f"synth {args.speakers} speakers x 4 classes x {args.per_class}",
              "fold": fold.fold, "epochs": args.epochs, "crop_samples": config.crop_length, "threads": 1,
              "cpu": b.environment(1.0, 1)["cpu"], "load_average": load_before,
              "load_average_after": list(os.getloadavg()), "graphs": rows,
              "calibration_clips": summary["graphs"]["int8_static"]["calibration_clips"]}
    atomic_write_json(args.out, result)
    table = Table(title=f"{args.student}, fold {fold.fold} of the synthetic corpus, one thread, "
                        f"{config.crop_length / 16000:g} s clip ({result['cpu']})")
    for column in ("graph", "MB", "WA %", "UA %", "UA change", "agree", "p50 ms", "min ms", "x fp32 speed"):
        table.add_column(column, justify="left" if column == "graph" else "right")
    for r in rows:
        table.add_row(r["graph"], f"{r['bytes'] / 1e6:.2f}", f"{100 * r['wa']:.2f}", f"{100 * r['ua']:.2f}",
                      f"{r['ua_change_points']:+.2f}", f"{100 * r['agree_with_fp32']:.1f} %",
                      f"{r['latency']['p50_ms']:.2f}", f"{r['latency']['min_ms']:.2f}", f"{r['speedup_vs_fp32']:.2f}")
    console.print(table)
    console.print(f"load average before {load_before}, after {result['load_average_after']}; JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
