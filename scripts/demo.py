"""`make demo`: the paper in miniature on the synthetic corpus, offline, on a laptop CPU, as one grid.

synthetic corpus -> `serkd grid` (demo_out/demo-grid.yaml): the eGeMAPS teacher per fold (openSMILE
eGeMAPSv02 functionals + logistic regression fitted on that fold's training speakers only: the classical
baseline, a real teacher code path that needs no GPU) -> Light-SERNet+ students per fold, trained with
the strong recipe (time shift, SpecAugment, class-balanced sampling, cosine schedule), with ce and with
KD methods from the teacher's stored fold-clean logits (cross-fitted on the training speakers, see
README "Teachers") -> results.db -> `serkd report`: per fold, mean ± std, the paper-style table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import yaml

from serkd.cli import main as serkd

# textbook KD (KL divided by the batch size, as Hinton et al.; the seed divides by batch x classes, which
# leaves little of the teacher in the loss) at a temperature that shows the teacher's second choices
METHOD_PARAMS = {"kd": {"kl_reduction": "batchmean", "temp": 2}}


def step(title: str, argv: list[str]) -> None:
    print(f"\n$ serkd {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    code = serkd(argv)
    if code:
        sys.exit(f"demo step failed: {title}")
    print(f"({title}: {time.perf_counter() - started:.1f} s)", flush=True)


def show(db: Path) -> None:
    """The report tables, each followed by what it shows and what it does not prove."""
    from serkd.cli.render import stdout
    from serkd.cli.report_tables import fold_table, summary_table
    from serkd.experiments.report import collect

    report = collect([db])
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
    code = serkd(["report", str(db), "--format", "md"])
    if code:
        sys.exit("demo step failed: report")
    print("Shows: the paper's layout (rows student x features, columns methods, WA / UA with n) and paired tests; "
          "does not prove: significance, which needs at least 6 (fold, seed) pairs.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--epochs", type=int, default=6, help="student epochs")
    parser.add_argument("--recipe", default="strong", help="student training recipe (seed or strong)")
    parser.add_argument("--methods", default="ce,kd,ckd", help="student losses (serkd.distill.available())")
    parser.add_argument("--jobs", type=int, default=1, help="grid units at once")
    args = parser.parse_args()
    out = args.out.resolve()
    os.environ.setdefault("SERKD_CACHE", str(out / "cache"))
    started = time.perf_counter()
    corpus = out / "corpus"
    if not (corpus / "manifest.csv").is_file():
        step("synthetic corpus", ["synth", str(corpus), "--speakers", "6", "--per-class", "6", "--seed", "0"])
    step("corpus summary", ["corpus", "synth", str(corpus), "--no-audio-check"])
    # 0.75 s students and 144 utterances keep 3 methods x 3 folds well inside 5 minutes on 2 CPU cores.
    # crossfit: on its own training utterances the teacher's outputs would be near one-hot (p = 0.996 for the
    # true class here), so KD would learn nothing beyond the labels; each training speaker gets the outputs of a
    # model fitted without that speaker instead (test speakers stay unseen, as always)
    grid = {
        "name": "demo", "corpus": {"kind": "synth", "root": str(corpus)}, "out": str(out / "grid"),
        "features": ["mel"], "students": ["lightsernet"],
        "methods": {m.strip(): METHOD_PARAMS.get(m.strip(), {}) for m in args.methods.split(",") if m.strip()},
        "teacher": {"model": "egemaps", "crossfit": True}, "folds": [0, 1, 2], "seeds": [0],
        "train": {"epochs": args.epochs, "length": 12000, "recipe": args.recipe},
    }
    spec = out / "demo-grid.yaml"
    spec.write_text(yaml.safe_dump(grid, sort_keys=False))
    step("the grid: eGeMAPS teacher per fold, then Light-SERNet+ students (units resume if interrupted)",
         ["grid", str(spec), "--jobs", str(args.jobs), "--json"])
    print("\n== Result: synthetic corpus, 3 speaker folds, best epoch on the validation speaker ==")
    show(out / "grid" / "results.db")
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; outputs under {out}")
    print(f"  grid: {spec} -> {out / 'grid'} (results.db; runs/<unit>/<fold>/: model, checkpoint, results)")
    print(f"  again: serkd report {out / 'grid' / 'results.db'} [--json | --format md | --plots DIR]")


if __name__ == "__main__":
    main()
