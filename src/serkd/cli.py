"""The ``serkd`` command line: one entry point, one verb per stage of the data flow.

Every verb has ``--help``; bad input ends the command with one line on stderr naming the file and
the problem (exit status 2), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import yaml
from rich.console import Console

from serkd.errors import SerkdError

CORPUS_KINDS = ("emodb", "iemocap", "csv", "synth")
# rich shrinks tables to 80 columns when not on a terminal (CI, pipes): give them room instead
stdout = Console(width=None if sys.stdout.isatty() else 160)
stderr = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def parse_params(pairs: list[str] | None) -> dict:
    """``key=value`` pairs; values are read as YAML scalars (numbers, booleans, lists)."""
    params = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SerkdError(f"--method-param expects key=value, got {pair!r}")
        params[key.strip()] = yaml.safe_load(value)
    return params


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


# ---------------------------------------------------------------- synth
def add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write the synthetic emotional-speech corpus")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--speakers", type=int, default=8)
    p.add_argument("--per-class", type=int, default=12, help="utterances per speaker and emotion")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-seconds", type=float, default=1.0)
    p.add_argument("--max-seconds", type=float, default=2.5)
    p.set_defaults(func=cmd_synth)


def cmd_synth(args) -> None:
    from serkd.data.synth import SynthConfig, generate

    if args.speakers < 3:
        raise SerkdError("--speakers must be at least 3 (train, validation and test speakers)")
    if args.per_class < 1 or not 0 < args.min_seconds <= args.max_seconds:
        raise SerkdError("--per-class must be >= 1 and 0 < --min-seconds <= --max-seconds")
    utts = generate(args.out, SynthConfig(args.speakers, args.per_class, args.seed, args.min_seconds,
                                          args.max_seconds))
    stderr.print(f"wrote {len(utts)} utterances to {args.out} (manifest: {args.out / 'manifest.csv'})")


# ---------------------------------------------------------------- corpus
def add_corpus(sub) -> None:
    p = sub.add_parser("corpus", help="read a corpus: counts by label and speaker, its folds, bad files")
    p.add_argument("kind", choices=CORPUS_KINDS)
    p.add_argument("root", type=Path, help="corpus folder (csv: the CSV file)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--skip-bad", action="store_true", help="drop bad files (and say how many) instead of failing")
    p.add_argument("--no-audio-check", action="store_true", help="only read headers, do not decode every file")
    add_corpus_options(p)
    p.set_defaults(func=cmd_corpus)


def add_corpus_options(p) -> None:
    p.add_argument("--labels", help="csv corpus: comma-separated class names fixing their order and ids")
    p.add_argument("--speakers-per-fold", type=int, default=1, help="csv corpus without a fold column")


def corpus_options(args) -> dict:
    options = {}
    if getattr(args, "labels", None):
        options["labels"] = [s.strip() for s in args.labels.split(",") if s.strip()]
    if getattr(args, "speakers_per_fold", 1) != 1:
        options["speakers_per_fold"] = args.speakers_per_fold
    return options


def cmd_corpus(args) -> None:
    from serkd.data.corpora import load_corpus
    from serkd.data.manifest import CorpusProblems
    from serkd.data.quality import audio_problems

    manifest = load_corpus(args.kind, args.root, **corpus_options(args))
    if not args.no_audio_check:
        manifest.problems += audio_problems(manifest)
    problems = list(manifest.problems)
    manifest = manifest.raise_problems(skip_bad=True)
    folds = manifest.folds
    counts = manifest.counts()
    if problems and not args.skip_bad:
        raise CorpusProblems(problems, hint=f"{len(problems)} bad input(s) in {args.root}; --skip-bad drops them")
    for note in manifest.notes:
        stderr.print(note)
    speakers = [u.speaker for u in manifest.utterances]
    fold_rows = [{"name": f.name, "test": list(f.test), "valid": list(f.valid),
                  "n_train": sum(s in f.train for s in speakers), "n_valid": sum(s in f.valid for s in speakers),
                  "n_test": sum(s in f.test for s in speakers)} for f in folds]
    if args.json:
        print_json({"corpus": args.kind, "root": str(args.root), "utterances": len(manifest),
                    "labels": counts["labels"], "speakers": counts["speakers"], "folds": fold_rows,
                    "skipped": len(problems)})
        return
    from rich.table import Table

    table = Table(title=f"{args.kind}: {len(manifest)} utterances")
    table.add_column("label")
    table.add_column("id", justify="right")
    table.add_column("utterances", justify="right")
    for i, (label, n) in enumerate(counts["labels"].items()):
        table.add_row(label, str(i), str(n))
    stdout.print(table)
    table = Table(title="speakers")
    table.add_column("speaker")
    table.add_column("utterances", justify="right")
    for speaker, n in counts["speakers"].items():
        table.add_row(speaker, str(n))
    stdout.print(table)
    table = Table(title="folds")
    for column in ("fold", "test", "valid", "n_train", "n_valid", "n_test"):
        table.add_column(column)
    for row in fold_rows:
        table.add_row(row["name"], " ".join(row["test"]), " ".join(row["valid"]), str(row["n_train"]),
                      str(row["n_valid"]), str(row["n_test"]))
    stdout.print(table)


# ---------------------------------------------------------------- train
def add_train_options(p, student_default: str = "lightsernet") -> None:
    p.add_argument("--corpus", required=True, choices=CORPUS_KINDS)
    p.add_argument("--root", required=True, type=Path, help="corpus folder (csv: the CSV file)")
    p.add_argument("--features", choices=("mel", "mfcc"), default="mel")
    p.add_argument("--length", type=int, help="crop/pad length in samples (default: the corpus' seed value)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--folds", help="comma list of fold indices or names (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--select", choices=("valid", "test"), default="valid",
                   help="choose the best epoch on validation speakers (default) or, as the seed did, on the "
                        "test fold (results marked test-selected)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--skip-bad", action="store_true", help="drop bad audio files instead of failing")
    p.add_argument("--out", required=True, type=Path, help="run folder")
    add_corpus_options(p)


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train (and distil) one student per fold")
    add_train_options(p)
    p.add_argument("--student", default="lightsernet", help="lightsernet or any timm model name")
    p.add_argument("--method", default="ce", help="ce, kd, dkd, rkd, ckd, mlkd, dist (serkd.distill.available())")
    p.add_argument("--method-param", action="append", metavar="KEY=VALUE", help="loss parameter, repeatable")
    p.add_argument("--teacher", type=Path, help="teacher outputs store (serkd teacher train/import-seed)")
    p.add_argument("--allow-leaky-teacher", action="store_true",
                   help="distil from a teacher that saw the fold's test speakers (results marked leaky-teacher)")
    p.add_argument("--seed-softmax", action="store_true",
                   help="Light-SERNet+ ends in a softmax as in the seed (losses then see probabilities)")
    p.set_defaults(func=cmd_train)


def run_config(args, **overrides):
    from serkd.train.run import RunConfig

    fields = dict(
        corpus=args.corpus, root=str(args.root), features=args.features, length=args.length, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, folds=args.folds, seed=args.seed,
        select=args.select, device=args.device, skip_bad=args.skip_bad, corpus_options=corpus_options(args),
    )
    fields.update(overrides)
    return RunConfig(**fields)


def cmd_train(args) -> None:
    from serkd.train.run import run

    config = run_config(
        args, student=args.student, method=args.method, method_params=parse_params(args.method_param),
        teacher=str(args.teacher) if args.teacher else None, allow_leaky_teacher=args.allow_leaky_teacher,
        seed_softmax=args.seed_softmax,
    )
    run(config, args.out, stderr)
    show_report([args.out])
    stderr.print(f"run folder: {args.out}")


# ---------------------------------------------------------------- report
def add_report(sub) -> None:
    p = sub.add_parser("report", help="per-fold and mean ± std WA/UA of one or more runs")
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_report)


def show_report(runs, as_json: bool = False) -> None:
    from serkd.experiments.report import collect, fold_table, summary_table

    report = collect(runs)
    if as_json:
        print_json(report)
        return
    stdout.print(fold_table(report))
    stdout.print(summary_table(report["summary"]))


def cmd_report(args) -> None:
    show_report(args.runs, args.json)


# ---------------------------------------------------------------- teacher
def add_teacher(sub) -> None:
    p = sub.add_parser("teacher", help="teachers: train per fold, import the seed's logits, evaluate")
    tsub = p.add_subparsers(dest="teacher_verb", required=True, metavar="{train,import-seed,eval}")
    t = tsub.add_parser("train", help="train a teacher per fold and store its logits for every utterance")
    add_train_options(t)
    t.add_argument("--model", required=True, help="a registered model or timm name (e.g. resnet18)")
    t.set_defaults(func=cmd_teacher_train)
    add_teacher_import_eval(tsub)


def cmd_teacher_train(args) -> None:
    from serkd.train.run import run

    config = run_config(args, student=args.model, method="ce")
    run(config, args.out / "runs", stderr, teacher_out=args.out)
    show_report([args.out / "runs"])
    stderr.print(f"teacher outputs: {args.out}")


def add_teacher_import_eval(tsub) -> None:
    def corpus_args(t) -> None:
        t.add_argument("--corpus", required=True, choices=CORPUS_KINDS)
        t.add_argument("--root", required=True, type=Path, help="corpus folder (csv: the CSV file)")
        t.add_argument("--skip-bad", action="store_true", help="drop bad files instead of failing")
        t.add_argument("--json", action="store_true", help="print JSON instead of text")
        add_corpus_options(t)

    t = tsub.add_parser("import-seed", help="store the seed's shipped logits (.pth) per fold, marked not fold-clean")
    t.add_argument("file", type=Path, help="the seed's *_tea_preds_by_path.pth ({file name or path: logits})")
    corpus_args(t)
    t.add_argument("--out", required=True, type=Path, help="teacher outputs folder")
    t.set_defaults(func=cmd_teacher_import_seed)
    t = tsub.add_parser("eval", help="teacher WA/UA per fold (argmax of stored logits) and mean ± std")
    t.add_argument("store", type=Path, help="teacher outputs folder")
    corpus_args(t)
    t.set_defaults(func=cmd_teacher_eval)


def cmd_teacher_import_seed(args) -> None:
    from serkd.data.corpora import load_corpus
    from serkd.data.seed_teacher import WHY_LEAKY, import_seed

    manifest = load_corpus(args.corpus, args.root, **corpus_options(args)).raise_problems(args.skip_bad)
    summary = import_seed(args.file, manifest, args.out)
    if args.json:
        print_json(summary.to_json())
        return
    stderr.print(f"imported {summary.matched} of {summary.keys} seed logits into {len(summary.folds)} folds of "
                 f"{args.out} (the same logits in each fold)")
    if summary.unmatched_keys:
        stderr.print(f"[yellow]{len(summary.unmatched_keys)} key(s) match no utterance of {args.root}, "
                     f"e.g. {summary.unmatched_keys[0]}")
    if summary.uncovered:
        stderr.print(f"[yellow]{len(summary.uncovered)} utterance(s) have no seed logits, e.g. {summary.uncovered[0]}: "
                     "distilling needs a teacher output for every utterance")
    stderr.print(f"[yellow]provenance seed-shipped, not fold-clean: {WHY_LEAKY}; serkd train --teacher needs "
                 "--allow-leaky-teacher and marks results leaky-teacher")


def cmd_teacher_eval(args) -> None:
    from serkd.data.corpora import load_corpus
    from serkd.experiments.report import fold_table, summary_table
    from serkd.experiments.teacher_eval import evaluate

    manifest = load_corpus(args.corpus, args.root, **corpus_options(args)).raise_problems(args.skip_bad)
    report = evaluate(args.store, manifest)
    if args.json:
        print_json(report)
        return
    shown = [{**row, "best_epoch": row["best_epoch"] or "-"} for row in report["rows"]]
    stdout.print(fold_table({"rows": shown}, title=f"teacher {args.store}: per fold"))
    stdout.print(summary_table(report["summary"]))


# ---------------------------------------------------------------- main
VERBS: list[Callable] = [add_synth, add_corpus, add_train, add_report, add_teacher]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="serkd", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add in VERBS:
        add(sub)
    return parser


def _version() -> str:
    from serkd import __version__

    return f"serkd {__version__}"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="serkd: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except SerkdError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            sys.stderr.write(f"serkd: error: {line}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("serkd: interrupted\n")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
