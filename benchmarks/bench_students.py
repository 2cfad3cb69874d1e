"""Students shaped for SER: parameters, FLOPs, ONNX sizes (fp32 and dynamic int8) and onnxruntime latency of each
student x pooling on the logmel front-end with corpus normalisation (issue 17).

    python benchmarks/bench_students.py [--out benchmarks/results/bench_students.json] [--repeats 20] [--quick]

Trains nothing: every student is built with random weights (size, FLOPs and latency do not depend on them) for
7 classes on 5 s of 16 kHz audio (logmel, 128 x 313), saved as a serkd checkpoint whose normalisation record
holds placeholder corpus statistics (zeros and ones: the cost is the same), and exported with
``serkd.deploy.export`` exactly as ``serkd export`` does, plus its dynamic-int8 graph. Each graph is timed end
to end (front-end, normalisation, network, softmax) in onnxruntime on one thread, p50 of ``repeats`` calls on
one 5 s clip. The tiny student's targets (issue 17): at most 100 K parameters, int8 graph at most 250 KB. Prints
a rich table and writes the JSON; the load average is recorded (on shared CPUs timings are upper bounds).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from serkd import models
from serkd.data.features import FeatureConfig
from serkd.deploy import bench as b
from serkd.deploy.export import export, quantize_int8
from serkd.io import atomic_write_json
from serkd.train.checkpoint import save_checkpoint
from serkd.train.provenance import provenance

LABELS = ["anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"]
CASES = (("tiny", "stats"), ("tiny", "attentive"), ("lightsernet", "global"), ("lightsernet", "stats"),
         ("mobilenetv3_small_075", "global"), ("mobilenetv3_small_075", "stats"))
TINY_PARAMETERS, TINY_INT8_BYTES = 100_000, 250_000


def checkpoint(folder: Path, name: str, pooling: str, config: FeatureConfig) -> Path:
    torch.manual_seed(0)
    model = models.create(name, num_classes=len(LABELS), pooling=pooling).eval()
    bins = 128
    save_checkpoint(folder, model, {
        "model": name, "model_options": {"pooling": pooling}, "labels": LABELS, "features": config.to_json(),
        "fold": {"name": "random-init", "test": [], "valid": [], "train": []},
        "data_hash": "none (random init: benchmark only)", "provenance": provenance(),
        "normalization": {"normalize": "corpus", "feature_kind": config.kind,
                          "corpus": {"mean": [0.0] * bins, "std": [1.0] * bins, "frames": 0, "speakers": []}},
    })
    return folder


def measure(work: Path, name: str, pooling: str, repeats: int) -> dict:
    config = FeatureConfig("logmel", 80000)
    folder = checkpoint(work / f"{name}-{pooling}", name, pooling, config)
    fp32 = work / f"{name}-{pooling}.onnx"
    exported = export(folder, fp32)
    int8 = fp32.with_suffix(".int8.onnx")
    quantize_int8(fp32, int8)
    model = models.create(name, num_classes=len(LABELS), pooling=pooling).eval()
    x = torch.zeros(1, 1, *config.shape())
    wave = b.clip(5.0)
    latency = {kind: b.onnx_latency(path, wave, 1, repeats).summary(5.0) for kind, path in (("fp32", fp32),
                                                                                          ("int8", int8))}
    return {"student": name, "pooling": pooling, "parameters": models.count_parameters(model),
            "network_mflop": b.count_flops(lambda: model(x)) / 1e6, "fp32_bytes": exported.size_bytes,
            "int8_bytes": int8.stat().st_size, "max_prob_difference": exported.max_prob_difference,
            "latency_1_thread": latency}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_students.json")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="the tiny student only, 3 timed runs")
    args = parser.parse_args(argv)
    cases = CASES[:1] if args.quick else CASES
    repeats = 3 if args.quick else args.repeats
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(Path(tmp), name, pooling, repeats) for name, pooling in cases]
    tiny = next(r for r in rows if r["student"] == "tiny" and r["pooling"] == "stats")
    result = {"rows": rows, "load_average": [load_before, os.getloadavg()[0]], "threads": 1,
              "targets": {"tiny_parameters": {"limit": TINY_PARAMETERS, "measured": tiny["parameters"],
                                              "met": tiny["parameters"] <= TINY_PARAMETERS},
                          "tiny_int8_bytes": {"limit": TINY_INT8_BYTES, "measured": tiny["int8_bytes"],
                                              "met": tiny["int8_bytes"] <= TINY_INT8_BYTES}}}
    table = Table(title="students x pooling on logmel (5 s, 7 classes), onnxruntime on 1 thread")
    for column in ("student", "pooling", "params", "net MFLOP", "fp32 KB", "int8 KB", "fp32 ms", "int8 ms",
                   "x real time"):
        table.add_column(column, justify="left" if column in ("student", "pooling") else "right")
    for r in rows:
        lat = r["latency_1_thread"]
        table.add_row(r["student"], r["pooling"], f"{r['parameters']:,}", f"{r['network_mflop']:.1f}",
                      f"{r['fp32_bytes'] / 1e3:.0f}", f"{r['int8_bytes'] / 1e3:.0f}", f"{lat['fp32']['p50_ms']:.2f}",
                      f"{lat['int8']['p50_ms']:.2f}", f"{lat['fp32']['x_realtime']:.0f}")
    console = Console()
    console.print(table)
    for key, target in result["targets"].items():
        console.print(f"{key}: {target['measured']:,} (limit {target['limit']:,}): "
                      f"{'met' if target['met'] else 'NOT met'}")
    atomic_write_json(args.out, result)
    console.print(f"wrote {args.out} (load average {load_before:.1f} -> {os.getloadavg()[0]:.1f})")
    return 0 if all(t["met"] for t in result["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
