"""``serkd eval``: score every model of a run on another corpus (cross-corpus), over the shared classes."""

from __future__ import annotations

from pathlib import Path

from serkd.cli.corpus import add_corpus_options, corpus_options
from serkd.cli.render import EventRenderer, print_json, stderr, stdout


def add_eval(sub) -> None:
    from serkd.data.corpora import available

    p = sub.add_parser("eval", help="cross-corpus: WA/UA of every fold model (and the final one) of a run on "
                                    "another corpus, over the classes both share")
    p.add_argument("run", type=Path, help="a run folder (serkd train --out)")
    p.add_argument("--corpus", required=True, choices=available(), help="the corpus to score on")
    p.add_argument("--root", required=True, type=Path, help="its folder (csv: the CSV file)")
    p.add_argument("--label-map", metavar="OTHER=RUN,...",
                   help="rename the other corpus' classes to the run's (e.g. angry=anger,calm=neutral)")
    p.add_argument("--skip-bad", action="store_true", help="drop bad audio files instead of failing")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="print JSON in serkd report's shape (rows, summary)")
    add_corpus_options(p)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> None:
    from serkd.cli.report_tables import fold_table, summary_table
    from serkd.experiments.cross_corpus import evaluate_run, parse_label_map

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with EventRenderer() as render:
        report = evaluate_run(args.run, args.corpus, args.root, parse_label_map(args.label_map),
                              corpus_options(args), args.skip_bad, args.device, render)
    if args.json:
        print_json(report)
        return
    stderr.print(f"{report['train_corpus']} -> {report['eval_corpus']}: {report['n_utterances']} utterances of the "
                 f"shared classes {', '.join(report['shared_classes'])}"
                 + (f"; left out: {', '.join(report['unused_eval_classes'])}" if report["unused_eval_classes"] else ""))
    stdout.print(fold_table(report, title=f"cross-corpus: {args.run} on {args.corpus}"))
    for s in report["summary"]:
        s["student"] = f"{s['student']} ({'final' if s.get('model') == 'final' else 'folds'})"
    stdout.print(summary_table(report["summary"], title="mean ± std over fold models; the final model alone"))
