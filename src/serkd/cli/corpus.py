"""``serkd synth`` and ``serkd corpus``: write the synthetic corpus, read any corpus."""

from __future__ import annotations

from pathlib import Path

from serkd.cli.render import parse_params, print_json, stderr, stdout
from serkd.errors import SerkdError


def add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write the synthetic emotional-speech corpus")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--speakers", type=int, default=8, help="speakers (default: 8)")
    p.add_argument("--per-class", type=int, default=12, help="utterances per speaker and emotion (default: 12)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--min-seconds", type=float, default=1.0, help="shortest utterance (default: 1.0)")
    p.add_argument("--max-seconds", type=float, default=2.5, help="longest utterance (default: 2.5)")
    p.add_argument("--overwrite", action="store_true", help="write into a folder that is not empty")
    p.set_defaults(func=cmd_synth)


def cmd_synth(args) -> None:
    from serkd.data.synth import SynthConfig, generate

    if args.speakers < 3:
        raise SerkdError("--speakers must be at least 3 (train, validation and test speakers)")
    if args.per_class < 1 or not 0 < args.min_seconds <= args.max_seconds:
        raise SerkdError("--per-class must be >= 1 and 0 < --min-seconds <= --max-seconds")
    if args.out.exists() and any(args.out.iterdir()) and not args.overwrite:
        raise SerkdError(f"{args.out}: folder is not empty (--overwrite writes into it; teacher outputs and runs of "
                         "the old audio then no longer match it)")
    utts = generate(args.out, SynthConfig(args.speakers, args.per_class, args.seed, args.min_seconds,
                                          args.max_seconds))
    stderr.print(f"wrote {len(utts)} utterances to {args.out} (manifest: {args.out / 'manifest.csv'})")


def add_corpus(sub) -> None:
    from serkd.data.corpora import available

    p = sub.add_parser("corpus", help="read a corpus: counts by label and speaker, its folds, bad files")
    p.add_argument("kind", choices=available())
    p.add_argument("root", type=Path, help="corpus folder (csv: the CSV file)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--skip-bad", action="store_true", help="drop bad files (and say how many) instead of failing")
    p.add_argument("--no-audio-check", action="store_true", help="only read headers, do not decode every file")
    add_corpus_options(p)
    p.set_defaults(func=cmd_corpus)


def add_corpus_options(p) -> None:
    p.add_argument("--labels", help="csv corpus: comma-separated class names fixing their order and ids")
    p.add_argument("--speakers-per-fold", type=int, help="csv corpus without a fold column (default: 1)")
    p.add_argument("--corpus-option", action="append", metavar="KEY=VALUE", help="any other corpus option")


def corpus_options(args) -> dict:
    options = parse_params(getattr(args, "corpus_option", None), "--corpus-option")
    if getattr(args, "labels", None):
        options["labels"] = [s.strip() for s in args.labels.split(",") if s.strip()]
    if getattr(args, "speakers_per_fold", None) is not None:
        options["speakers_per_fold"] = args.speakers_per_fold
    return options


def cmd_corpus(args) -> None:
    from serkd.data.corpora import load_corpus
    from serkd.data.manifest import CorpusProblems, skip_hint
    from serkd.data.quality import audio_problems

    manifest = load_corpus(args.kind, args.root, **corpus_options(args))
    if not args.no_audio_check:
        manifest.problems += audio_problems(manifest)
    problems = list(manifest.problems)
    total = manifest.listed()
    manifest = manifest.raise_problems(skip_bad=True)
    if problems and not args.skip_bad:
        raise CorpusProblems(problems, hint=skip_hint(problems, total, str(args.root)))
    for note in manifest.notes:
        stderr.print(note)
    speakers = [u.speaker for u in manifest.utterances]
    counts = manifest.counts()
    fold_rows = [{"name": f.name, "test": list(f.test), "valid": list(f.valid),
                  "n_train": sum(s in f.train for s in speakers), "n_valid": sum(s in f.valid for s in speakers),
                  "n_test": sum(s in f.test for s in speakers), **({"group": f.group} if f.group else {})}
                 for f in manifest.folds]
    if args.json:
        print_json({"corpus": args.kind, "root": str(args.root), "utterances": len(manifest),
                    "labels": counts["labels"], "speakers": counts["speakers"], "folds": fold_rows,
                    "skipped": len(problems)})
        return
    from rich.table import Table

    table = Table(title=f"{args.kind}: {len(manifest)} utterances")
    for column, justify in (("label", "left"), ("id", "right"), ("utterances", "right")):
        table.add_column(column, justify=justify)
    for i, (label, n) in enumerate(counts["labels"].items()):
        table.add_row(label, str(i), str(n))
    stdout.print(table)
    table = Table(title="speakers")
    table.add_column("speaker")
    table.add_column("utterances", justify="right")
    for speaker, n in counts["speakers"].items():
        table.add_row(speaker, str(n))
    stdout.print(table)
    table = Table(title="folds (named after their test speakers)")
    for column in ("fold", "test", "valid", "n_train", "n_valid", "n_test"):
        table.add_column(column)
    for row in fold_rows:
        table.add_row(row["name"], " ".join(row["test"]), " ".join(row["valid"]), str(row["n_train"]),
                      str(row["n_valid"]), str(row["n_test"]))
    stdout.print(table)
