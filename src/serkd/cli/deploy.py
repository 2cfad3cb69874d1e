"""``serkd export``, ``serkd predict`` and ``serkd bench``: the deploy verbs (the workflow is
``serkd.deploy.workflow``)."""

from __future__ import annotations

from pathlib import Path

from serkd.cli.corpus import add_corpus_options, corpus_options
from serkd.cli.render import print_json, stderr, stdout
from serkd.errors import SerkdError


def add_export(sub) -> None:
    from serkd.data.corpora import available

    p = sub.add_parser("export", help="export a trained fold to ONNX: waveform in, class probabilities out")
    p.add_argument("fold_dir", type=Path, help="RUN_DIR/<fold> (model.safetensors + checkpoint.json)")
    p.add_argument("--out", required=True, type=Path, help="the float32 graph (.onnx)")
    p.add_argument("--int8", action="store_true",
                   help="also write OUT.int8.onnx with int8 weights (under a third of the size, float32 speed)")
    p.add_argument("--int8-static", action="store_true",
                   help="also write a static int8 (QDQ) graph calibrated on the fold's training utterances, "
                        "OUT.int8-static.onnx: int8 compute (needs --corpus and --root)")
    p.add_argument("--corpus", choices=available(),
                   help="with --root: WA/UA of the graph(s) on the fold's test speakers")
    p.add_argument("--root", type=Path, help="corpus folder (csv: the CSV file)")
    p.add_argument("--skip-bad", action="store_true", help="evaluation: drop bad audio files instead of failing")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    add_corpus_options(p)
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> None:
    from serkd.deploy.workflow import export_and_evaluate

    summary = export_and_evaluate(args.fold_dir, args.out, args.int8, args.corpus, args.root, args.skip_bad,
                                  corpus_options(args), int8_static=args.int8_static)
    graphs = summary["graphs"]
    fp32 = graphs["fp32"]
    stderr.print(f"wrote {fp32['path']} ({fp32['bytes'] / 1e6:.2f} MB; onnxruntime vs torch max |dp| "
                 f"{summary['max_prob_difference']:.1e})")
    for name in ("int8", "int8_static"):
        if name in graphs:
            stderr.print(f"wrote {graphs[name]['path']}: size {fp32['bytes'] / 1e6:.2f} MB -> "
                         f"{graphs[name]['bytes'] / 1e6:.2f} MB ({graphs[name]['bytes'] / fp32['bytes']:.0%})")
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
    for name in ("int8", "int8_static"):
        if args.corpus and name in graphs:
            delta = [100 * (graphs[name][k] - graphs["fp32"][k]) for k in ("wa", "ua")]
            table.add_row(f"{name} - fp32", "", f"{(graphs[name]['bytes'] - graphs['fp32']['bytes']) / 1e6:+.2f}",
                          f"{delta[0]:+.2f}", f"{delta[1]:+.2f}")
    stdout.print(table)


def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="emotion of audio files with an exported graph (any rate / channels)")
    p.add_argument("model", type=Path, help="a graph written by serkd export")
    p.add_argument("audio", nargs="+", type=Path, help="audio files or folders (searched recursively)")
    p.add_argument("--json", action="store_true", help='print [{"path", "label", "probs": {label: p}, ...}]')
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: all cores)")
    p.add_argument("--window", type=float, metavar="S",
                   help="predict every S-second window, each scored whole, and give each file a timeline and the "
                        "label of its mean window probabilities (default: files longer than the model's training "
                        "length are scored as windows of that length, and the output says so)")
    p.add_argument("--hop", type=float, metavar="H", help="seconds between window starts (default: the window)")
    p.add_argument("--min-seconds", type=float, default=0.5,
                   help='mark clips shorter than this "unreliable" (default: 0.5)')
    p.add_argument("--speaker", type=Path, nargs="+", metavar="CLIPS",
                   help="speaker-normalised graphs: the speaker's statistics from these clips (files or folders; "
                        "default: from the files of this call, taken as one speaker)")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> None:
    from serkd.deploy.predict import OnnxClassifier, predict

    results, problems = predict(OnnxClassifier(args.model, args.threads), args.audio, args.window, args.hop,
                                args.min_seconds, args.speaker)
    for r in results:  # said once per file, here; the library only marks the result
        if r.get("unreliable"):
            stderr.print(f"[yellow]serkd: warning: {r['path']}: {r['reason']}: the prediction is unreliable",
                         highlight=False)
    if results and results[0].get("speaker_statistics"):
        stderr.print(f"speaker statistics {results[0]['speaker_statistics']}", highlight=False)
    if args.json:
        print_json(results)
    elif results:
        from rich.table import Table

        table = Table()
        for column in ("path", "label", "probability", "note"):
            table.add_column(column, justify="right" if column == "probability" else "left")
        for r in results:
            note = "unreliable: " + r["reason"] if r.get("unreliable") else (
                f"mean of {r['windows']} windows of the training length" if r.get("windows") else "")
            table.add_row(r["path"], r["label"], f"{r['probs'][r['label']]:.3f}", note)
            for w in r.get("timeline", []):
                table.add_row(f"  {w['start']:.2f}-{w['end']:.2f} s", w["label"], f"{w['probs'][w['label']]:.3f}", "")
        stdout.print(table)
    if problems:  # every readable file was predicted; the bad ones end the command, one line each
        raise SerkdError("\n".join(str(problem) for problem in problems))


def add_bench(sub) -> None:
    from serkd.deploy.bench import CLIP_SECONDS

    p = sub.add_parser("bench", help="latency, real-time factor, size and FLOPs of a graph beside a WavLM teacher")
    p.add_argument("model", type=Path, help="a graph written by serkd export")
    p.add_argument("--teacher", default="auto",
                   help="auto (WavLM Base+: its weights if cached, else its architecture with random weights, never "
                        "downloaded), base-plus-config (Base+ size, random init), tiny (tests only), none, or a local "
                        "WavLM folder / hub id")
    p.add_argument("--seconds", type=float, default=CLIP_SECONDS, help=f"clip length (default: {CLIP_SECONDS})")
    p.add_argument("--repeats", type=int, default=30, help="timed runs of the student (default: 30)")
    p.add_argument("--teacher-repeats", type=int, default=10, help="timed runs of the teacher (default: 10)")
    p.add_argument("--threads", type=int, help="the 'all threads' count (default: the CPUs this process may use)")
    p.add_argument("--quick", action="store_true", help="3 timed runs each (smoke test, not a measurement)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--out", type=Path, help="also write the JSON result here")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> None:
    from serkd.deploy.bench import bench
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
    for table in bench_tables(result):
        stdout.print(table)
    for line in result["headline"]:
        stdout.print(line, highlight=False)


def bench_tables(result: dict) -> list:
    """``serkd bench``'s result as rich tables: latency per model / runtime / threads, then the targets."""
    from rich.table import Table

    from serkd.deploy.bench import format_rows

    latency = Table(title=f"latency on one {result['clip_seconds']:g} s clip (p50 / p95 of the timed runs; CPU: "
                          "the process' CPU time per run)")
    for column in ("model", "runtime", "threads", "p50 ms", "p95 ms", "CPU ms", "x real time", "x real time (CPU)",
                   "GFLOP", "size MB"):
        latency.add_column(column, justify="left" if column in ("model", "runtime") else "right")
    for row in format_rows(result):
        cpu = row.get("x_realtime_cpu")
        latency.add_row(row["model"], row["runtime"], row["threads"], f"{row['p50_ms']:.2f}", f"{row['p95_ms']:.2f}",
                        f"{row['cpu_p50_ms']:.2f}" if row.get("cpu_p50_ms") else "-", f"{row['x_realtime']:.0f}",
                        f"{cpu:.0f}" if cpu else "-", f"{row['gflop']:.3f}", f"{row['size_mb']:.2f}")
    goals = Table(title="targets")
    for column in ("target", "measured", "goal", "met"):
        goals.add_column(column)
    for row in result["targets"]:
        met = "-" if row["met"] is None else ("yes" if row["met"] else "NO")
        goal = "-" if row["goal"] is None else f"{row['goal']:.3g}"
        goals.add_row(row["target"], f"{row['value']:.3g}", goal, met)
    return [latency, goals]
