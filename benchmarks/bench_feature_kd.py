"""Feature KD vs logit KD on the synthetic corpus: test UA per fold of one student trained with
CE, KD, CKD and each feature method (fitnet, pkt, sp, rkd_emb) from one CNN teacher's cached outputs.

    python benchmarks/bench_feature_kd.py [--quick] [--out benchmarks/results/bench_feature_kd.json]

The teacher (Light-SERNet+, trained per fold on the fold's training speakers) stores its logits and
penultimate embeddings; every student reads them, so feature KD costs what logit KD costs. Epochs are
chosen on the validation speaker. Few test utterances per fold: differences of a few points are noise.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from serkd.config import RunConfig, TeacherConfig
from serkd.data.synth import SynthConfig, generate
from serkd.io import atomic_write_json
from serkd.train.run import run
from serkd.train.teachers import train_teacher

METHODS = ("ce", "kd", "ckd", "fitnet", "pkt", "sp", "rkd_emb")
# textbook KD (batchmean) for the logit term; feature methods keep their papers' defaults
PARAMS = {"kd": {"kl_reduction": "batchmean"}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and folds (smoke test)")
    parser.add_argument("--student", default="mobilenetv3_small_075")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_feature_kd.json")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench_feature_kd_"))
    os.environ.setdefault("SERKD_CACHE", str(work / "cache"))
    corpus = work / "corpus"
    generate(corpus, SynthConfig(speakers=6, per_class=8, seed=0, min_seconds=0.8, max_seconds=1.5))
    folds, epochs, teacher_epochs = ("0,1", 3, 4) if args.quick else ("0,1,2", 12, 20)
    common = {"corpus": "synth", "root": str(corpus), "length": 12000, "folds": folds, "seed": 0, "threads": 2}
    started = time.perf_counter()
    teacher = train_teacher(TeacherConfig(model="lightsernet", out=str(work / "teacher"), epochs=teacher_epochs,
                                          **common))
    rows = [{"method": "teacher (lightsernet)", "ua": [r.ua for r in teacher], "folds": [r.fold for r in teacher],
             "seconds": round(sum(r.train_seconds for r in teacher), 1)}]
    for method in METHODS:
        results = run(RunConfig(student=args.student, method=method, method_params=PARAMS.get(method, {}),
                                teacher=None if method == "ce" else str(work / "teacher"), epochs=epochs,
                                out=str(work / "runs" / method), **common))
        rows.append({"method": method, "ua": [r.ua for r in results], "folds": [r.fold for r in results],
                     "seconds": round(sum(r.train_seconds for r in results), 1)})
    print(f"\n{args.student} students, synthetic corpus (6 speakers x 4 emotions x 8), folds {folds}, "
          f"{epochs} epochs (teacher {teacher_epochs}); test UA %, epoch chosen on validation UA")
    print(f"{'method':24s} {'per fold':30s} {'mean':>6s} {'train s':>8s}")
    for row in rows:
        per_fold = " ".join(f"{100 * u:5.1f}" for u in row["ua"])
        print(f"{row['method']:24s} {per_fold:30s} {100 * np.mean(row['ua']):6.1f} {row['seconds']:8.1f}")
    result = {"student": args.student, "folds": folds, "epochs": epochs, "teacher_epochs": teacher_epochs,
              "quick": args.quick, "rows": rows, "wall_seconds": round(time.perf_counter() - started, 1),
              "load_average": os.getloadavg()[0]}
    atomic_write_json(args.out, result)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
