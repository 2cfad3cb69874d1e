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
    """``key=value`` pairs; numbers (``1e-3`` included), booleans and lists are typed, the rest stay text."""
    params = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SerkdError(f"--method-param expects key=value, got {pair!r}")
        params[key.strip()] = _scalar(value.strip())
    return params


def _scalar(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return yaml.safe_load(text)  # true/false, null, [1, 2] ...


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
    p.add_argument("--tensorboard", action="store_true", help="write per-epoch curves to RUN_DIR/tensorboard")
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
        tensorboard=args.tensorboard,
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
    p.add_argument("--plot", type=Path, metavar="PNG", help="also plot WA/UA per run and validation curves")
    p.set_defaults(func=cmd_report)


def show_report(runs, as_json: bool = False, plot: Path | None = None) -> None:
    from serkd.experiments.report import collect, fold_table, summary_table

    report = collect(runs)
    if plot:
        from serkd.experiments.plots import plot_report

        plot_report(runs, report, plot)
        stderr.print(f"plot: {plot}")
    if as_json:
        print_json(report)
        return
    stdout.print(fold_table(report))
    stdout.print(summary_table(report["summary"]))


def cmd_report(args) -> None:
    show_report(args.runs, args.json, args.plot)


# ---------------------------------------------------------------- teacher
def add_teacher(sub) -> None:
    p = sub.add_parser("teacher", help="teachers: train per fold, import the seed's logits, evaluate")
    tsub = p.add_subparsers(dest="teacher_verb", required=True, metavar="{train,import-seed,eval,tiny-wavlm}")
    t = tsub.add_parser("train", help="train a teacher per fold and store its logits for every utterance")
    add_train_options(t)
    t.add_argument("--model", required=True,
                   help="a registered model or timm name (e.g. resnet18), or a WavLM checkpoint to fine-tune: "
                        "a hub id (microsoft/wavlm-base-plus) or a local folder with config.json")
    w = t.add_argument_group("WavLM teachers (--model is a hub id or folder; --length is the crop length)")
    w.add_argument("--revision", help="hub revision (branch, tag or commit) to load")
    w.add_argument("--head-lr", type=float, help="learning rate of the new head (default 5e-4; --lr: the transformer)")
    w.add_argument("--warmup", type=float, help="linear warm-up, fraction of the optimiser steps (default 0.1)")
    w.add_argument("--grad-accum", type=int, help="batches per optimiser step (default 1)")
    w.add_argument("--train-feature-encoder", action="store_true", help="also fine-tune the CNN feature encoder")
    w.add_argument("--no-bf16", action="store_true", help="no bf16 autocast on CUDA")
    # None: each kind of teacher fills in its own defaults (a CNN from scratch vs. fine-tuning a transformer)
    t.set_defaults(func=cmd_teacher_train, epochs=None, batch_size=None, lr=None, weight_decay=None)
    add_teacher_import_eval(tsub)
    tiny = tsub.add_parser("tiny-wavlm", help="write a tiny random-init WavLM folder (tests, demo; not Base+)")
    tiny.add_argument("out", type=Path)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=cmd_teacher_tiny)


WAVLM_ONLY = ("revision", "head_lr", "warmup", "grad_accum", "train_feature_encoder", "no_bf16")
CNN_TEACHER_DEFAULTS = {"epochs": 100, "batch_size": 16, "lr": 1e-3, "weight_decay": 1e-4}  # serkd train's


def cmd_teacher_train(args) -> None:
    from serkd.models.wavlm_teacher import looks_like_hf_model
    from serkd.train.run import run

    if looks_like_hf_model(args.model):
        cmd_teacher_train_wavlm(args)
        return
    given = [name for name in WAVLM_ONLY if getattr(args, name)]
    if given:
        raise SerkdError(f"--{given[0].replace('_', '-')} applies to WavLM teachers only, not {args.model!r}")
    _fill_defaults(args, CNN_TEACHER_DEFAULTS)
    config = run_config(args, student=args.model, method="ce")
    run(config, args.out, stderr, teacher_out=args.out)  # results beside the outputs, as for WavLM teachers
    show_report([args.out])
    stderr.print(f"teacher outputs: {args.out}")


def _fill_defaults(args, values: dict) -> None:
    for name, value in values.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def cmd_teacher_train_wavlm(args) -> None:
    from serkd.train.teacher_wavlm import WAVLM_DEFAULTS, WavLMTeacherConfig, train_teacher

    _fill_defaults(args, WAVLM_DEFAULTS)
    options = {"revision": args.revision, "head_lr": args.head_lr, "warmup": args.warmup, "grad_accum": args.grad_accum}
    config = WavLMTeacherConfig(
        model=args.model, run=run_config(args, student=args.model, method="teacher", features="waveform"),
        freeze_feature_encoder=not args.train_feature_encoder, bf16=not args.no_bf16,
        **{k: v for k, v in options.items() if v is not None},
    )
    train_teacher(config, args.out, stderr)
    show_report([args.out])
    stderr.print(f"teacher outputs: {args.out}")


def cmd_teacher_tiny(args) -> None:
    from serkd.models.wavlm_teacher import TINY_NOTE, write_tiny

    write_tiny(args.out, args.seed)
    stderr.print(f"wrote a {TINY_NOTE} to {args.out} (use it with --model {args.out})")


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


# ---------------------------------------------------------------- deploy: export, predict, bench
def add_export(sub) -> None:
    p = sub.add_parser("export", help="export a trained fold to ONNX: waveform in, class probabilities out")
    p.add_argument("fold_dir", type=Path, help="RUN_DIR/<fold> (model.safetensors + checkpoint.json)")
    p.add_argument("--out", required=True, type=Path, help="the float32 graph (.onnx)")
    p.add_argument("--int8", action="store_true", help="also write a dynamically int8-quantized graph, OUT.int8.onnx")
    p.add_argument("--corpus", choices=CORPUS_KINDS,
                   help="with --root: WA/UA of the graph(s) on the fold's test speakers")
    p.add_argument("--root", type=Path, help="corpus folder (csv: the CSV file)")
    p.add_argument("--skip-bad", action="store_true", help="evaluation: drop bad audio files instead of failing")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    add_corpus_options(p)
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> None:
    from serkd.deploy.export import export, quantize_int8
    from serkd.deploy.predict import OnnxClassifier, evaluate, fold_test_items

    if (args.corpus is None) != (args.root is None):
        raise SerkdError("--corpus and --root go together")
    result = export(args.fold_dir, args.out)
    graphs = {"fp32": {"path": str(result.path), "bytes": result.size_bytes}}
    stderr.print(f"wrote {result.path} ({result.size_bytes / 1e6:.2f} MB; onnxruntime vs torch max |dp| "
                 f"{result.max_prob_difference:.1e})")
    if args.int8:
        int8_path = args.out.with_suffix(".int8.onnx")
        sizes = quantize_int8(args.out, int8_path)
        graphs["int8"] = {"path": str(int8_path), "bytes": sizes["int8_bytes"]}
        stderr.print(f"wrote {int8_path}: size {sizes['fp32_bytes'] / 1e6:.2f} MB -> "
                     f"{sizes['int8_bytes'] / 1e6:.2f} MB ({sizes['int8_bytes'] / sizes['fp32_bytes']:.0%})")
    summary = {"fold_dir": str(args.fold_dir), "graphs": graphs, "max_prob_difference": result.max_prob_difference,
               "metadata": result.metadata}
    if args.corpus:
        speakers = json.loads(result.metadata["source_test_speakers"])
        items = fold_test_items(args.corpus, args.root, speakers, json.loads(result.metadata["labels"]),
                                args.skip_bad, **corpus_options(args))
        for graph in graphs.values():
            scores = evaluate(OnnxClassifier(graph["path"]), items)
            graph.update(wa=scores["wa"], ua=scores["ua"], n_test=scores["n"])
        summary["test_speakers"] = speakers
    if args.json:
        print_json(summary)
        return
    from rich.table import Table

    table = Table(title=f"{args.fold_dir}" + (f" on {args.corpus} test speakers" if args.corpus else ""))
    for column in ("graph", "path", "size MB", *(("WA %", "UA %") if args.corpus else ())):
        table.add_column(column)
    for name, graph in graphs.items():
        scores = (f"{100 * graph['wa']:.2f}", f"{100 * graph['ua']:.2f}") if args.corpus else ()
        table.add_row(name, graph["path"], f"{graph['bytes'] / 1e6:.2f}", *scores)
    if args.corpus and "int8" in graphs:
        delta = [100 * (graphs["int8"][k] - graphs["fp32"][k]) for k in ("wa", "ua")]
        table.add_row("int8 - fp32", "", f"{(graphs['int8']['bytes'] - graphs['fp32']['bytes']) / 1e6:+.2f}",
                      f"{delta[0]:+.2f}", f"{delta[1]:+.2f}")
    stdout.print(table)


def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="emotion of audio files with an exported graph (any rate / channels)")
    p.add_argument("model", type=Path, help="a graph written by serkd export")
    p.add_argument("audio", nargs="+", type=Path, help="audio files or folders (searched recursively)")
    p.add_argument("--json", action="store_true", help='print [{"path", "label", "probs": {label: p}}]')
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: all cores)")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> None:
    from serkd.deploy.predict import OnnxClassifier, predict

    results, problems = predict(OnnxClassifier(args.model, args.threads), args.audio)
    if args.json:
        print_json(results)
    elif results:
        from rich.table import Table

        table = Table()
        for column in ("path", "label", "probability"):
            table.add_column(column, justify="right" if column == "probability" else "left")
        for r in results:
            table.add_row(r["path"], r["label"], f"{r['probs'][r['label']]:.3f}")
        stdout.print(table)
    if problems:  # every readable file was predicted; the bad ones end the command, one line each
        raise SerkdError("\n".join(str(problem) for problem in problems))


def add_bench(sub) -> None:
    from serkd.deploy.bench import CLIP_SECONDS

    p = sub.add_parser("bench", help="latency, real-time factor, size and FLOPs of a graph beside a WavLM teacher")
    p.add_argument("model", type=Path, help="a graph written by serkd export")
    p.add_argument("--teacher", default="auto",
                   help="auto (Base+ weights if cached, else tiny), tiny, base-plus-config (Base+ size, random "
                        "init), none, or a local WavLM folder / hub id")
    p.add_argument("--seconds", type=float, default=CLIP_SECONDS, help="clip length")
    p.add_argument("--repeats", type=int, default=30, help="timed runs of the student")
    p.add_argument("--teacher-repeats", type=int, default=10, help="timed runs of the teacher")
    p.add_argument("--threads", type=int, help="the 'all threads' count (default: the CPUs this process may use)")
    p.add_argument("--quick", action="store_true", help="3 timed runs each (smoke test, not a measurement)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--out", type=Path, help="also write the JSON result here")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> None:
    from serkd.deploy.bench import bench, tables
    from serkd.io import atomic_write_json

    if args.seconds <= 0 or args.repeats < 1 or args.teacher_repeats < 1:
        raise SerkdError("--seconds must be positive and --repeats / --teacher-repeats at least 1")
    repeats, teacher_repeats = (3, 3) if args.quick else (args.repeats, args.teacher_repeats)
    result = bench(args.model, args.teacher, args.seconds, repeats, teacher_repeats, args.threads)
    if args.out:
        atomic_write_json(args.out, result)
    if args.json:
        print_json(result)
        return
    for table in tables(result):
        stdout.print(table)


# ---------------------------------------------------------------- main
VERBS: list[Callable] = [add_synth, add_corpus, add_train, add_report, add_teacher, add_export, add_predict,
                         add_bench]


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
