"""int8 benchmark: does quantization make a trained student faster on this CPU, and what does it cost in UA?

    python benchmarks/bench_int8.py [--students lightsernet,mobilenetv3_small_075] [--epochs 6] [--speakers 6]
                                    [--per-class 20] [--repeats 30] [--out benchmarks/results/bench_int8.json]

For each student: trains it on fold 0 of a synthetic corpus (``serkd synth``: 1-2.5 s clips, crop 24000
samples), exports it as ``serkd export --int8 --int8-static --corpus ...`` does (float32; int8 weights;
static int8 QDQ calibrated on the fold's training utterances), scores each graph on the fold's test speaker
(WA/UA, and how many predictions agree with float32) and times each end to end in onnxruntime on **one
thread** on one clip of the crop length (p50 of ``repeats`` runs, wall and the process' CPU time, the graphs
interleaved so the machine's load drifts over all of them alike). The machine is shared: wall times are
upper bounds, the load average and the CPU's int8 instructions (``cpu_flags``) are recorded. The synthetic
corpus is easy; the UA change is what matters, not the UA.
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
    parser.add_argument("--students", default="lightsernet,mobilenetv3_small_075")
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

    from serkd.data.synth import SynthConfig, generate
    from serkd.deploy import bench as b
    from serkd.io import atomic_write_json

    torch.set_num_threads(1)
    console = Console(width=160)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_int8_"))
    corpus = work / "synth"
    if not (corpus / "manifest.csv").is_file():
        generate(corpus, SynthConfig(speakers=args.speakers, per_class=args.per_class, seed=0))
    load_before = list(os.getloadavg())
    environment = b.environment(1.0, 1)
    result = {"corpus": f"synth {args.speakers} speakers x 4 classes x {args.per_class}", "epochs": args.epochs,
              "threads": 1, "cpu": environment["cpu"], "cpu_flags": environment["cpu_flags"],
              "load_average": load_before, "students": []}
    for student in args.students.split(","):
        entry = measure_student(student, corpus, work / student, args, console)
        result["students"].append(entry)
        atomic_write_json(args.out, {**result, "load_average_after": list(os.getloadavg())})
    result["load_average_after"] = list(os.getloadavg())
    atomic_write_json(args.out, result)
    for entry in result["students"]:
        table = Table(title=f"{entry['student']}, fold {entry['fold']} of the synthetic corpus, one thread, "
                            f"{entry['crop_samples'] / 16000:g} s clip ({result['cpu']}; int8 instructions: "
                            f"{', '.join(result['cpu_flags']) or 'none'})")
        for column in ("graph", "MB", "x fp32 size", "WA %", "UA %", "UA change", "agree", "p50 ms", "CPU ms",
                       "x fp32 speed (CPU)"):
            table.add_column(column, justify="left" if column == "graph" else "right")
        for r in entry["graphs"]:
            table.add_row(r["graph"], f"{r['bytes'] / 1e6:.2f}", f"{r['size_vs_fp32']:.2f}", f"{100 * r['wa']:.2f}",
                          f"{100 * r['ua']:.2f}", f"{r['ua_change_points']:+.2f}",
                          f"{100 * r['agree_with_fp32']:.1f} %",
                          f"{r['latency']['p50_ms']:.2f}", f"{r['latency']['cpu_p50_ms']:.2f}",
                          f"{r['speedup_vs_fp32_cpu']:.2f}")
        console.print(table)
    console.print(f"load average before {load_before}, after {result['load_average_after']}; JSON: {args.out}")
    return 0


def measure_student(student: str, corpus: Path, work: Path, args, console) -> dict:
    """Train fold 0, export the three graphs, score them on the test speaker, time them interleaved."""
    import time

    from serkd.config import RunConfig
    from serkd.data.audio import load_audio
    from serkd.data.corpora import load_corpus
    from serkd.deploy.predict import OnnxClassifier, evaluate, fold_test_items, session
    from serkd.deploy.workflow import export_and_evaluate
    from serkd.train.run import run

    config = RunConfig(corpus="synth", root=str(corpus), student=student, epochs=args.epochs, folds="0", threads=1,
                       out=str(work / "run"))
    fold = run(config)[0]
    console.print(f"trained {student} fold {fold.fold}: test UA {100 * fold.ua:.2f} (torch)")
    summary = export_and_evaluate(work / "run" / fold.fold, work / "model.onnx", int8=True, corpus="synth",
                                  root=corpus, int8_static=True)
    manifest = load_corpus("synth", corpus)
    items = fold_test_items("synth", corpus, fold.test, manifest.labels)
    wave = np.resize(load_audio(items[0][0]), config.crop_length).astype(np.float32)[None]  # one crop-length clip
    rows, reference = [], None
    for name, graph in summary["graphs"].items():
        scored = evaluate(OnnxClassifier(graph["path"], threads=1), items)
        reference = scored["predictions"] if reference is None else reference
        rows.append({"graph": name, "bytes": graph["bytes"], "wa": scored["wa"], "ua": scored["ua"],
                     "n_test": scored["n"], "agree_with_fp32": float(np.mean(np.array(scored["predictions"])
                                                                            == np.array(reference)))})
    runners = [session(summary["graphs"][r["graph"]]["path"], threads=1) for r in rows]
    feeds = [{runner.get_inputs()[0].name: wave} for runner in runners]
    wall, cpu = [[] for _ in rows], [[] for _ in rows]
    for runner, feed in zip(runners, feeds):  # warm-up
        for _ in range(3):
            runner.run(None, feed)
    for _ in range(args.repeats):  # interleaved: the machine's load drifts over every graph alike
        for i, (runner, feed) in enumerate(zip(runners, feeds)):
            started, cpu_started = time.perf_counter(), time.process_time()
            runner.run(None, feed)
            wall[i].append(1000 * (time.perf_counter() - started))
            cpu[i].append(1000 * (time.process_time() - cpu_started))
    seconds = config.crop_length / 16000
    for row, w, c in zip(rows, wall, cpu):
        row["latency"] = {"p50_ms": float(np.median(w)), "min_ms": float(np.min(w)), "cpu_p50_ms": float(np.median(c)),
                          "x_realtime": seconds * 1000 / float(np.median(w)),
                          "x_realtime_cpu": seconds * 1000 / float(np.median(c)), "runs": args.repeats}
    fp32 = rows[0]
    for row in rows:
        row["ua_change_points"] = 100 * (row["ua"] - fp32["ua"])
        row["size_vs_fp32"] = row["bytes"] / fp32["bytes"]
        row["speedup_vs_fp32"] = fp32["latency"]["p50_ms"] / row["latency"]["p50_ms"]
        row["speedup_vs_fp32_cpu"] = fp32["latency"]["cpu_p50_ms"] / row["latency"]["cpu_p50_ms"]
    return {"student": student, "fold": fold.fold, "crop_samples": config.crop_length, "graphs": rows,
            "calibration_clips": summary["graphs"]["int8_static"]["calibration_clips"],
            "quantization": {name: OnnxClassifier(graph["path"]).metadata.get("quantization")
                             for name, graph in summary["graphs"].items()}}


if __name__ == "__main__":
    sys.exit(main())
