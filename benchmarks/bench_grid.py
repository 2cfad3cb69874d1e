"""Grid throughput and per-unit overhead: a tiny grid with --jobs 1, --jobs 2 and a local Ray; the time a unit
costs beyond its training loop, as a fraction of that training time.

    python benchmarks/bench_grid.py [--quick] [--runs local1,local2,ray2] [--out benchmarks/results/bench_grid.json]

Per unit: ``seconds`` is the whole unit as its worker saw it (the corpus and features taken from the worker's
prepared-data cache or built on its first unit, the teacher's outputs, training, test, checkpoint and results
written); ``train_seconds`` the training loop alone. ``in-unit`` overhead = sum(seconds - train_seconds) /
sum(train_seconds) over the student units; ``first``/``later`` split it into each worker's first unit (which
prepares the data) and the rest. The driver's own share (checks, features, store writes, scheduling, process
start) is the wall time beyond the units' work divided by the number of workers; ``total`` adds it. Target:
in-unit overhead <= 5 % on a quiet machine. The load average during the run is printed beside the numbers: on a
shared machine other processes' work lands in every figure.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

from serkd.data.synth import SynthConfig, generate
from serkd.experiments.executors import make_executor
from serkd.experiments.grid import GridSpec, run_grid
from serkd.experiments.store import ResultsStore
from serkd.io import atomic_write_json

RUNS = {"local1": ("local", 1), "local2": ("local", 2), "ray2": ("ray", 2)}


def overhead(units: list[dict]) -> float:
    train = sum(u["result"]["train_seconds"] for u in units)
    return (sum(u["seconds"] for u in units) - train) / train if train else float("nan")


def one(spec_dict: dict, out: Path, executor_kind: str, jobs: int) -> dict:
    spec = GridSpec.from_dict({**spec_dict, "out": str(out)})
    executor = make_executor(executor_kind, jobs)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    try:
        summary = run_grid(spec, executor)
    finally:
        executor.close()
    wall = time.perf_counter() - started
    with ResultsStore(out / "results.db") as store:
        units = store.finished()
    students = [u for u in units if u["kind"] == "student"]
    unit_s = sum(u["seconds"] for u in units)
    train_s = sum(u["result"]["train_seconds"] for u in units)
    first = students[:jobs]  # each worker's first student unit prepares its data (in finishing order: about so)
    driver_s = max(0.0, wall - unit_s / jobs)
    return {"executor": executor_kind, "jobs": jobs, "units": summary.total, "failed": len(summary.failed),
            "wall_s": round(wall, 1), "units_per_min": round(60 * summary.ran / wall, 2),
            "unit_s": round(unit_s, 1), "train_s": round(train_s, 1),
            "overhead_in_unit": round(overhead(students), 4), "overhead_first": round(overhead(first), 4),
            "overhead_later": round(overhead(students[jobs:]), 4),
            "per_unit_overhead_s": round(sum(u["seconds"] - u["result"]["train_seconds"] for u in students)
                                         / len(students), 3),
            "driver_s": round(driver_s, 1),
            "overhead_total": round((unit_s - train_s + driver_s * jobs) / train_s, 4),
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs instead of 6")
    parser.add_argument("--runs", default="local1,local2,ray2", help=f"which of {', '.join(RUNS)}")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_grid.json")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench_grid_"))
    os.environ.setdefault("SERKD_CACHE", str(work / "cache"))
    corpus = work / "corpus"
    generate(corpus, SynthConfig(speakers=5, per_class=6, seed=0, min_seconds=0.8, max_seconds=1.5))
    epochs = 2 if args.quick else 6
    spec = {"name": "bench", "corpus": {"kind": "synth", "root": str(corpus)}, "features": ["mel"],
            "students": ["mobilenetv3_small_075"], "methods": {"ce": {}, "kd": {}, "ckd": {}},
            "teacher": {"model": "mobilenetv3_small_075", "epochs": epochs}, "folds": [0, 1, 2], "seeds": [0],
            "train": {"epochs": epochs, "length": 16000}}
    (work / "grid.yaml").write_text(yaml.safe_dump(spec))
    rows = []
    for name in args.runs.split(","):
        kind, jobs = RUNS[name.strip()]
        rows.append(one(spec, work / name.strip(), kind, jobs))
        print(rows[-1], flush=True)
    print(f"\ntiny grid: 3 teacher folds + 3 methods x 3 folds of mobilenetv3_small_075, {epochs} epochs, 1 thread "
          f"per unit; {os.cpu_count()} CPUs")
    print(f"{'executor':10s} {'jobs':>4s} {'units/min':>10s} {'wall s':>8s} {'train s':>8s} {'in-unit':>8s} "
          f"{'first':>7s} {'later':>7s} {'s/unit':>7s} {'total':>7s} {'load':>10s}")
    for r in rows:
        print(f"{r['executor']:10s} {r['jobs']:4d} {r['units_per_min']:10.2f} {r['wall_s']:8.1f} {r['train_s']:8.1f} "
              f"{100 * r['overhead_in_unit']:7.1f}% {100 * r['overhead_first']:6.1f}% "
              f"{100 * r['overhead_later']:6.1f}% {r['per_unit_overhead_s']:7.2f} {100 * r['overhead_total']:6.1f}% "
              f"{r['load_average'][0]:4.1f}-{r['load_average'][1]:4.1f}")
    atomic_write_json(args.out, {"rows": rows, "epochs": epochs, "cpus": os.cpu_count(), "gpu": None,
                                 "uptime": Path("/proc/loadavg").read_text().strip()
                                 if Path("/proc/loadavg").is_file() else None})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
