"""``serkd eval``: score every model of a run on another corpus (cross-corpus), over the shared classes."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from serkd.cli.corpus import add_corpus_options, corpus_options
from serkd.cli.render import EventRenderer, print_json, stderr, stdout


def add_eval(sub) -> None:
    from serkd.data.corpora import available

    p = sub.add_parser("eval", help="cross-corpus: WA/UA of every fold model (and the final one) of a run on "
                                    "another corpus, over the classes both share")
    p.add_argument("run", type=Path, help="a run folder (serkd train --out), or a grid's output folder (every unit's "
                                          "run folder in OUT/runs/ is scored)")
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
    stdout.print(eval_fold_table(report, title=f"cross-corpus: {args.run} on {args.corpus}"))
    stdout.print(eval_summary_table(report["summary"]))


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def eval_fold_table(report: dict, title: str) -> Table:
    """One row per model: its UA on the other corpus beside its own test fold's (in-domain) UA."""
    table = Table(title=title)
    for column in ("run", "model", "best epoch", "WA %", "UA %", "in-domain UA %", "marks"):
        table.add_column(column, justify="right" if column.endswith("%") or column == "best epoch" else "left")
    for row in report["rows"]:
        table.add_row(Path(str(row["run"])).name, row["fold"],
                      "-" if row.get("best_epoch") is None else str(row["best_epoch"]),
                      _percent(row["wa"]), _percent(row["ua"]), _percent(row.get("in_domain_ua")),
                      ", ".join(row.get("marks") or []))
    return table


def eval_summary_table(summary: list[dict]) -> Table:
    from serkd.experiments.report import mean_std

    table = Table(title="mean ± std over fold models (the final model alone); in-domain: the same models' own test UA")
    for column in ("run", "models", "student", "features", "method", "n", "WA %", "UA %", "in-domain UA %", "marks"):
        table.add_column(column, justify="right" if "%" in column or column == "n" else "left")
    for s in summary:
        table.add_row(Path(str(s["run"])).name, "final" if s.get("model") == "final" else "folds", str(s["student"]),
                      str(s["features"]), s.get("label") or str(s["method"]), str(s["n"]),
                      mean_std(s["wa_mean"], s["wa_std"]), mean_std(s["ua_mean"], s["ua_std"]),
                      _percent(s.get("in_domain_ua_mean")), ", ".join(s.get("marks") or []))
    return table
