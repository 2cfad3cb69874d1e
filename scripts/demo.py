"""`make demo`: the paper in miniature on the synthetic corpus, offline, on a laptop CPU.

synthetic corpus -> the eGeMAPS teacher per fold (openSMILE eGeMAPSv02 functionals + logistic regression
fitted on that fold's training speakers only: the classical baseline, a real teacher code path that
needs no GPU) -> Light-SERNet+ students per fold, trained with the strong recipe (time shift,
SpecAugment, class-balanced sampling, cosine schedule), with ce and with KD methods from the teacher's
stored fold-clean logits (cross-fitted on the training speakers, see README "Teachers") -> WA/UA
tables (per fold, then mean ± std over folds), the teacher's own test WA/UA included.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from serkd.cli import main as serkd

# textbook KD (KL divided by the batch size, as Hinton et al.; the seed divides by batch x classes, which
# leaves little of the teacher in the loss) at a temperature that shows the teacher's second choices
METHOD_PARAMS = {"kd": ["--method-param", "kl_reduction=batchmean", "--method-param", "temp=2"]}


def step(title: str, argv: list[str]) -> None:
    print(f"\n$ serkd {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    code = serkd(argv)
    if code:
        sys.exit(f"demo step failed: {title}")
    print(f"({title}: {time.perf_counter() - started:.1f} s)", flush=True)


def show(runs: list[str]) -> None:
    """The two report tables, each with what it shows and what it does not prove."""
    from serkd.cli.render import stdout
    from serkd.experiments.report import collect, fold_table, summary_table

    report = collect(runs)
    n_test = sorted({r["n_test"] for r in report["rows"]})
    n_folds = len({r["fold"] for r in report["rows"]})
    stdout.print(fold_table(report, title="per fold (test = one unseen speaker)"))
    print(f"Shows: each fold's test speaker scored by the teacher and by every student, the epoch picked on another "
          f"speaker; does not prove: that one method beats another on a fold, since a fold tests only "
          f"{'/'.join(map(str, n_test))} utterances (one utterance moves UA by several points).")
    stdout.print(summary_table(report["summary"], title="mean ± std over folds"))
    print(f"Shows: KD students against the CE student and the eGeMAPS teacher, same folds, same seed; does not "
          f"prove: a ranking on real speech ({n_folds} folds, one seed, a synthetic corpus; "
          "benchmarks/bench_recipe.py measures speech).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--epochs", type=int, default=6, help="student epochs")
    parser.add_argument("--recipe", default="strong", help="student training recipe (seed or strong)")
    parser.add_argument("--methods", default="ce,kd,ckd", help="student losses (serkd.distill.available())")
    args = parser.parse_args()
    out = args.out.resolve()
    os.environ.setdefault("SERKD_CACHE", str(out / "cache"))
    started = time.perf_counter()
    corpus = out / "corpus"
    # 0.75 s students and 144 utterances keep 3 methods x 3 folds well inside 5 minutes on 2 CPU cores
    common = ["--corpus", "synth", "--root", str(corpus), "--folds", "0,1,2", "--seed", "0"]
    step("synthetic corpus", ["synth", str(corpus), "--speakers", "6", "--per-class", "6", "--seed", "0"])
    step("corpus summary", ["corpus", "synth", str(corpus), "--no-audio-check"])
    teacher = out / "teacher-egemaps"
    # --crossfit: on its own training utterances the teacher's outputs would be near one-hot (p = 0.996 for the
    # true class here), so KD would learn nothing beyond the labels; each training speaker gets the outputs of a
    # model fitted without that speaker instead (test speakers stay unseen, as always)
    step("teacher per fold: eGeMAPS functionals + logistic regression (C chosen on the validation speaker)",
         ["teacher", "train", "--model", "egemaps", "--crossfit", *common, "--out", str(teacher)])
    runs = [str(teacher)]
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        run_dir = out / "runs" / f"lightsernet-{method}"
        distil = [] if method == "ce" else ["--teacher", str(teacher), *METHOD_PARAMS.get(method, [])]
        step(f"Light-SERNet+ with {method}", ["train", *common, "--epochs", str(args.epochs), "--length", "12000",
                                               "--recipe", args.recipe, "--student", "lightsernet", "--method",
                                               method, *distil, "--out", str(run_dir)])
        runs.append(str(run_dir))
    print("\n== Result: synthetic corpus, 3 speaker folds, best epoch on the validation speaker ==")
    show(runs)
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; outputs under {out}")
    print(f"  runs: {out / 'runs'}  (per fold: model.safetensors, checkpoint.json, results.json)")
    print(f"  JSON report: serkd report {' '.join(runs)} --json")


if __name__ == "__main__":
    main()
