"""``serkd report PATH...``: run folders, a grid's results.db and/or report-shaped JSON files → per-fold rows,
mean ± std per configuration, the paper-style table per corpus, paired Wilcoxon tests; ``--format``, ``--json``,
plots. The library computes; :mod:`serkd.cli.report_tables` draws."""

from __future__ import annotations

from pathlib import Path

from serkd.cli.render import print_json, stderr, stdout
from serkd.cli.report_tables import fold_table, paper_table, per_class_table, runs_table, summary_table, tests_table

__all__ = ["add_report", "fold_table", "show_report", "summary_table"]

MAX_FOLD_ROWS = 40  # more fold rows than this drown the summary: --folds shows them


def add_report(sub) -> None:
    p = sub.add_parser("report", help="per-fold and mean ± std WA/UA of runs or a grid's results.db")
    p.add_argument("runs", nargs="+", type=Path, metavar="PATH",
                   help="run folder(s) (a glob such as runs/* is fine), a results.db / grid output folder, or a JSON "
                        "file of rows (serkd eval --json, serkd teacher eval --json)")
    p.add_argument("--json", action="store_true", help="print JSON (rows, summary, runs, tests)")
    p.add_argument("--format", choices=("rich", "md", "csv", "latex"), default="rich",
                   help="paper-style tables and paired tests as markdown or LaTeX, or one CSV of numbers (a row per "
                        "configuration and per test) instead of terminal tables")
    p.add_argument("--per-class", action="store_true", help="per-class recall and macro-F1 per configuration")
    p.add_argument("--folds", action="store_true", help=f"always list every fold (default: up to {MAX_FOLD_ROWS})")
    p.add_argument("--plots", type=Path, metavar="DIR",
                   help="write confusion, bar and curve PNGs and TensorBoard event files (DIR/tensorboard)")
    p.add_argument("--plot", type=Path, metavar="PNG", help="one summary figure: WA/UA bars and validation curves")
    p.set_defaults(func=cmd_report)


def show_report(runs, as_json: bool = False, plot: Path | None = None, fmt: str = "rich", per_class: bool = False,
                plots: Path | None = None, all_folds: bool = False) -> None:
    from serkd.experiments import report as r

    report = r.collect(runs)
    if plot:
        from serkd.experiments.plots import plot_report

        plot_report(report, plot)
        stderr.print(f"plot: {plot}")
    if plots:
        from serkd.experiments.plots import write_plots

        written = write_plots(report, plots)
        stderr.print(f"plots: {len(written)} written to {plots} (tensorboard --logdir {plots / 'tensorboard'})")
    if as_json:
        print_json(r.report_json(report))
        return
    problems = runs_table(report["runs"])
    if fmt != "rich":
        if problems is not None:
            stderr.print(problems)
        print(r.format_text(report, fmt, per_class), end="")
        return
    if all_folds or len(report["rows"]) <= MAX_FOLD_ROWS:
        stdout.print(fold_table(report))
    else:
        stdout.print(f"{len(report['rows'])} fold results (--folds lists them)")
    stdout.print(summary_table(report["summary"]))
    for table in report["tables"]:
        stdout.print(paper_table(table))
    if per_class:
        stdout.print(per_class_table(report["summary"]))
    if report["tests"]:
        stdout.print(tests_table(report["tests"]))
    if problems is not None:
        stdout.print(problems)


def cmd_report(args) -> None:
    show_report(args.runs, args.json, args.plot, args.format, args.per_class, args.plots, args.folds)
