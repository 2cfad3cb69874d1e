"""``serkd train``, ``serkd teacher ...``, ``serkd methods`` and ``serkd students``."""

from __future__ import annotations

from pathlib import Path

from serkd.cli.config_args import add_config_arguments, check_print_config, config_from_args
from serkd.cli.corpus import add_corpus_options, corpus_options
from serkd.cli.render import EventRenderer, print_json, stderr, stdout
from serkd.config import RunConfig, TeacherConfig
from serkd.errors import SerkdError


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train (and distil) one student per fold")
    add_config_arguments(p, RunConfig)
    p.add_argument("--overwrite", action="store_true", help="start the run folder over (default: resume: folds "
                                                            "finished with the same config and data are kept)")
    p.set_defaults(func=cmd_train)


def run_from_args(cls, args, train) -> Path | None:
    """Build the config (file + flags), print it or run ``train(config, on_event, overwrite=...)``, then
    show the folder's report; the folder, or None after --print-config."""
    from serkd.cli.report import show_report

    config = config_from_args(cls, args)
    if check_print_config(config, args):
        return None
    with EventRenderer() as render:
        train(config, render, overwrite=args.overwrite)
    show_report([Path(config.out)])
    return Path(config.out)


def cmd_train(args) -> None:
    from serkd.train.run import run

    out = run_from_args(RunConfig, args, run)
    if out:
        stderr.print(f"run folder: {out}  (repeat it: serkd train --config {out / 'config.yaml'})")


def add_teacher(sub) -> None:
    p = sub.add_parser("teacher", help="teachers: train per fold, import the seed's logits, evaluate")
    tsub = p.add_subparsers(dest="teacher_verb", required=True, metavar="{train,import-seed,eval,tiny-wavlm}")
    t = tsub.add_parser("train", help="train a teacher per fold and store its outputs for every utterance")
    add_config_arguments(t, TeacherConfig)
    t.add_argument("--overwrite", action="store_true", help="start the store over (default: resume)")
    t.set_defaults(func=cmd_teacher_train)
    add_teacher_import_eval(tsub)
    tiny = tsub.add_parser("tiny-wavlm", help="write a tiny random-init WavLM folder (tests, demo; not Base+)")
    tiny.add_argument("out", type=Path)
    tiny.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    tiny.set_defaults(func=cmd_teacher_tiny)


def cmd_teacher_train(args) -> None:
    from serkd.train.teachers import train_teacher

    out = run_from_args(TeacherConfig, args, train_teacher)
    if out:
        stderr.print(f"teacher outputs: {out}  (repeat it: serkd teacher train --config {out / 'config.yaml'})")


def cmd_teacher_tiny(args) -> None:
    from serkd.models.wavlm_teacher import TINY_NOTE, write_tiny

    write_tiny(args.out, args.seed)
    stderr.print(f"wrote a {TINY_NOTE} to {args.out} (use it with --model {args.out})")


def add_teacher_import_eval(tsub) -> None:
    from serkd.data.corpora import available

    def corpus_args(t, required: bool) -> None:
        hint = "" if required else " (default: as the store recorded it)"
        t.add_argument("--corpus", required=required, choices=available(), help="corpus kind" + hint)
        t.add_argument("--root", required=required, type=Path, help="corpus folder (csv: the CSV file)" + hint)
        t.add_argument("--skip-bad", action="store_true", help="drop bad files instead of failing")
        t.add_argument("--json", action="store_true", help="print JSON instead of text")
        add_corpus_options(t)

    t = tsub.add_parser("import-seed", help="store the seed's shipped logits (.pth) per fold, marked not fold-clean")
    t.add_argument("file", type=Path, help="the seed's *_tea_preds_by_path.pth ({file name or path: logits})")
    corpus_args(t, required=True)
    t.add_argument("--out", required=True, type=Path, help="teacher outputs folder")
    t.set_defaults(func=cmd_teacher_import_seed)
    t = tsub.add_parser("eval", help="teacher WA/UA per fold (argmax of stored logits) and mean ± std")
    t.add_argument("store", type=Path, help="teacher outputs folder")
    corpus_args(t, required=False)
    t.set_defaults(func=cmd_teacher_eval)


def cmd_teacher_import_seed(args) -> None:
    from serkd.data.corpora import load_corpus
    from serkd.data.seed_teacher import WHY_LEAKY, import_seed

    options = corpus_options(args)
    manifest = load_corpus(args.corpus, args.root, **options).raise_problems(args.skip_bad)
    summary = import_seed(args.file, manifest, args.out, root=args.root, corpus_options=options)
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
    from serkd.cli.report import fold_table, summary_table
    from serkd.data.corpora import load_corpus
    from serkd.data.teacher_outputs import recorded_corpus
    from serkd.experiments.teacher_eval import evaluate

    kind, root, options = args.corpus, args.root, corpus_options(args)
    if kind is None or root is None:
        recorded = recorded_corpus(args.store) if args.store.is_dir() else None
        if recorded is None:
            raise SerkdError(f"{args.store}: the store does not record its corpus; give --corpus and --root")
        kind, root = kind or recorded["corpus"], root or Path(recorded["root"])
        options = options or recorded["corpus_options"]
    manifest = load_corpus(kind, root, **options).raise_problems(args.skip_bad)
    report = evaluate(args.store, manifest)
    if args.json:
        print_json(report)
        return
    shown = [{**row, "best_epoch": row["best_epoch"] or "-"} for row in report["rows"]]
    stdout.print(fold_table({"rows": shown}, title=f"teacher {args.store}: per fold"))
    stdout.print(summary_table(report["summary"]))


def add_methods(sub) -> None:
    p = sub.add_parser("methods", help="the KD methods with their parameters and defaults")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_methods)
    p = sub.add_parser("students", help="the registered students with their options and defaults")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_students)


def cmd_methods(args) -> None:
    from serkd import distill

    rows = [{"name": name, "summary": distill.summary(name), "needs_teacher": distill.get(name).needs_teacher,
             "params": distill.defaults(name)} for name in distill.available()]
    _listing(rows, args.json, "KD methods (serkd train --method NAME --method-param KEY=VALUE)")


def cmd_students(args) -> None:
    from serkd import models

    names = [n for n in models.available() if not n.startswith("<")]
    rows = [{"name": n, "params": models.options(n)} for n in names]
    rows.append({"name": "<any timm model>", "params": models.options("resnet18")})
    _listing(rows, args.json, "students (serkd train --student NAME --student-param KEY=VALUE)")


def _listing(rows: list[dict], as_json: bool, title: str) -> None:
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title=title)
    table.add_column("name")
    if any("summary" in r for r in rows):
        table.add_column("what")
    table.add_column("parameters (defaults)")
    for r in rows:
        params = ", ".join(f"{k}={v!r}" for k, v in r["params"].items()) or "-"
        table.add_row(r["name"], *([r["summary"]] if "summary" in r else []), params)
    stdout.print(table)
