"""Grid throughput: units per minute of a tiny grid with --jobs 1, --jobs 2 and a local Ray, and the
overhead per unit outside training (scheduling, store, loading data) as a fraction of its training time.

    python benchmarks/bench_grid.py [--quick] [--out benchmarks/results/bench_grid.json]

Per unit: ``seconds`` is the whole unit as its worker saw it (config, corpus and features read from
the cache, training, test, files written); ``train_seconds`` the training loop alone. The driver's
own share (store writes, scheduling, process start) is the wall time beyond the units' work divided
by the number of workers. Target: overhead <= 5 % of the training time. On a GPU, run the same with
more units sharing the device (``ray: {gpus_per_unit: 0.25}``); no GPU was lent to this benchmark's
author, so none is measured here.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import yaml

from serkd.data.synth import SynthConfig, generate
from serkd.experiments.executors import make_executor
from serkd.experiments.grid import GridSpec, run_grid
from serkd.io import atomic_write_json


def one(spec_dict: dict, out: Path, executor_kind: str, jobs: int) -> dict:
    spec = GridSpec.from_dict({**spec_dict, "out": str(out)})
    executor = make_executor(executor_kind, jobs)
    started = time.perf_counter()
    try:
        summary = run_grid(spec, executor)
    finally:
        executor.close()
    wall = time.perf_counter() - started
    conn = sqlite3.connect(out / "results.db")
    rows = conn.execute("SELECT seconds, result FROM units WHERE status = 'done'").fetchall()
    conn.close()
    import json

    unit_s = sum(r[0] for r in rows)
    train_s = sum(json.loads(r[1])["train_seconds"] for r in rows)
    overhead_in_unit = (unit_s - train_s) / train_s
    driver_s = max(0.0, wall - unit_s / jobs)
    return {"executor": executor_kind, "jobs": jobs, "units": summary.total, "failed": len(summary.failed),
            "wall_s": round(wall, 1), "units_per_min": round(60 * summary.ran / wall, 2),
            "unit_s": round(unit_s, 1), "train_s": round(train_s, 1),
            "overhead_in_unit": round(overhead_in_unit, 4),
            "driver_s": round(driver_s, 1), "overhead_total": round((unit_s - train_s + driver_s * jobs) / train_s, 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
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
    for kind, jobs in (("local", 1), ("local", 2), ("ray", 2)):
        rows.append(one(spec, work / f"{kind}{jobs}", kind, jobs))
        print(rows[-1], flush=True)
    print(f"\ntiny grid: 3 teacher folds + 3 methods x 3 folds of mobilenetv3_small_075, {epochs} epochs, 1 thread "
          f"per unit; load average {os.getloadavg()[0]:.1f}")
    print(f"{'executor':10s} {'jobs':>4s} {'units/min':>10s} {'wall s':>8s} {'train s':>8s} {'in-unit ovh':>12s} "
          f"{'total ovh':>10s}")
    for r in rows:
        print(f"{r['executor']:10s} {r['jobs']:4d} {r['units_per_min']:10.2f} {r['wall_s']:8.1f} {r['train_s']:8.1f} "
              f"{100 * r['overhead_in_unit']:11.1f}% {100 * r['overhead_total']:9.1f}%")
    atomic_write_json(args.out, {"rows": rows, "epochs": epochs, "load_average": os.getloadavg()[0],
                                 "cpus": os.cpu_count(), "gpu": None})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
