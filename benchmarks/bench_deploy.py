"""Deployment benchmark: students exported to ONNX (float32, int8 weights, static int8) beside a WavLM teacher.

    python benchmarks/bench_deploy.py [--out benchmarks/results/bench_deploy.json] [--teacher base-plus-config]
                                      [--students lightsernet,mobilenetv3_small_075,tiny] [--repeats 30]
                                      [--teacher-repeats 5] [--threads N] [--no-int8] [--quick]

``--students`` takes any registered student or timm name (default: Light-SERNet+, mobilenetv3_small_075,
and ``tiny`` when that student is registered). Trains nothing: each student is built with random weights
(latency and FLOPs do not depend on them) for 7 classes on the Emo-DB mel preset (5 s crop, 128 x 313
features), saved as a serkd checkpoint (safetensors + JSON) and exported with ``serkd.deploy.export``
exactly as ``serkd export`` does, plus its int8-weights graph and its static-int8 (QDQ) graph, the latter
calibrated on 16 synthetic tone-and-noise clips (no corpus here: the ranges do not change the timing;
accuracy is ``benchmarks/bench_int8.py``'s business). Every graph is timed end to end in onnxruntime on
one 5 s clip (crop, front-end, network, softmax) on one thread and on all threads, its torch twin in eager
mode, and the teacher once in torch eager on the same clip (default: the WavLM Base+ architecture with
random weights). FLOPs come from torch's FlopCounterMode. Prints rich tables (latency, targets) and writes
the JSON. The load average before and after and the CPU's int8 instructions are recorded; on shared CPUs
wall times are upper bounds, and the process' CPU time per run (also recorded) is what a run costs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from serkd import models
from serkd.deploy import bench as b
from serkd.deploy.export import export
from serkd.deploy.quantize import quantize_int8, quantize_int8_static
from serkd.io import atomic_write_json
from serkd.train.checkpoint import save_checkpoint
from serkd.train.provenance import provenance

STUDENTS = ("lightsernet", "mobilenetv3_small_075", "tiny")  # tiny: measured once it is registered
LABELS = ["anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"]  # Emo-DB, seed order
FEATURES = {"kind": "mel", "length": 80000}


def checkpoint(folder: Path, name: str) -> Path:
    from serkd.data.features import FeatureConfig

    torch.manual_seed(0)
    model = models.create(name, num_classes=len(LABELS)).eval()
    save_checkpoint(folder, model, {
        "model": name, "model_options": {}, "labels": LABELS,
        "features": FeatureConfig(FEATURES["kind"], FEATURES["length"]).to_json(),
        "fold": {"name": "random-init", "test": [], "valid": [], "train": []},
        "data_hash": "none (random init: benchmark only)", "provenance": provenance(),
    })
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_deploy.json")
    parser.add_argument("--teacher", default="base-plus-config", help="as serkd bench --teacher")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--teacher-repeats", type=int, default=5)
    parser.add_argument("--students", help="comma-separated student names (default: " + ",".join(STUDENTS) + ")")
    parser.add_argument("--threads", type=int, help="the 'all threads' count (default: the usable CPUs)")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 graphs")
    parser.add_argument("--quick", action="store_true", help="3 timed runs each, tiny teacher (smoke test)")
    parser.add_argument("--keep", type=Path, help="keep the checkpoints and graphs in this folder")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.teacher_repeats, args.teacher = 3, 3, "tiny"
    console = Console(width=160)
    n_all = args.threads or b.all_threads()
    counts = tuple(sorted({1, n_all}))
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_deploy_"))
    result = b.environment(b.CLIP_SECONDS, n_all)
    result.update(teacher_spec=args.teacher, graphs=[])
    graphs = []
    students = args.students.split(",") if args.students else [n for n in STUDENTS if n != "tiny" or
                                                                 "tiny" in models.STUDENTS]
    for name in students:
        fold = checkpoint(work / name, name)
        exported = export(fold, work / f"{name}.onnx")
        console.print(f"exported {exported.path} ({exported.size_bytes / 1e6:.2f} MB, onnxruntime vs torch max |dp| "
                      f"{exported.max_prob_difference:.1e})")
        graphs.append(exported.path)
        if not args.no_int8:
            graphs.append(work / f"{name}.int8.onnx")
            quantize_int8(exported.path, graphs[-1])
            graphs.append(work / f"{name}.int8-static.onnx")
            quantize_int8_static(exported.path, graphs[-1], [b.clip(5.0, seed=i) for i in range(16)])
    console.print(f"timing the teacher ({args.teacher}) on {counts} thread(s)...")
    teacher = b.bench_teacher(args.teacher, len(LABELS), b.CLIP_SECONDS, args.teacher_repeats, counts)
    for path in graphs:
        console.print(f"timing {path.name}...")
        entry = {**result, "student": b.bench_student(path, b.CLIP_SECONDS, args.repeats, counts), "teacher": teacher}
        entry["targets"] = b.targets(entry)
        result["graphs"].append({"student": entry["student"], "targets": entry["targets"]})
    result["teacher"] = teacher
    result["load_average_after"] = b.environment(b.CLIP_SECONDS, n_all)["load_average"]
    for graph in result["graphs"]:
        graph["headline"] = b.headline({**result, "student": graph["student"]})
    atomic_write_json(args.out, result)
    console.print(latency_table(result))
    console.print(target_table(result))
    for graph in result["graphs"]:
        console.print(f"{Path(graph['student']['path']).name}: " + "; ".join(graph["headline"]), highlight=False)
    console.print(f"load average before {result['load_average']}, after {result['load_average_after']} "
                  f"on {result['cores']} core(s); int8 instructions: {', '.join(result['cpu_flags']) or 'none'}; "
                  f"JSON: {args.out}")
    return 0


def latency_table(result: dict) -> Table:
    table = Table(title=f"end-to-end latency, one {result['clip_seconds']:g} s clip ({result['cpu']})")
    for column in ("model", "runtime", "threads", "p50 ms", "p95 ms", "min ms", "CPU ms", "x real time",
                   "x real time (CPU)", "GFLOP", "MB"):
        table.add_column(column, justify="left" if column in ("model", "runtime") else "right")
    rows = [row for graph in result["graphs"] for row in b.format_rows({"student": graph["student"]})]
    if result["teacher"]:
        rows += [row for row in b.format_rows({"student": result["graphs"][0]["student"], "teacher": result["teacher"]})
                 if row["model"].startswith("teacher")]
    for row in rows:
        cpu = row.get("x_realtime_cpu")
        table.add_row(row["model"], row["runtime"], row["threads"], f"{row['p50_ms']:.2f}", f"{row['p95_ms']:.2f}",
                      f"{row['min_ms']:.2f}", f"{row['cpu_p50_ms']:.2f}" if row.get("cpu_p50_ms") else "-",
                      f"{row['x_realtime']:.0f}", f"{cpu:.0f}" if cpu else "-", f"{row['gflop']:.3f}",
                      f"{row['size_mb']:.2f}")
    return table


def target_table(result: dict) -> Table:
    table = Table(title="targets (one thread)")
    for column in ("graph", "target", "measured", "goal", "met"):
        table.add_column(column)
    for graph in result["graphs"]:
        for row in graph["targets"]:
            met = "-" if row["met"] is None else ("yes" if row["met"] else "NO")
            goal = "-" if row["goal"] is None else f"{row['goal']:.3g}"
            table.add_row(Path(graph["student"]["path"]).name, row["target"], f"{row['value']:.3g}", goal, met)
    return table


if __name__ == "__main__":
    sys.exit(main())
