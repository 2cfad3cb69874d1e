"""``serkd report``: per-fold and mean ± std WA/UA of one or more run folders."""

from __future__ import annotations

from pathlib import Path

from serkd.cli.render import print_json, stderr, stdout
from serkd.experiments.report import fold_table, summary_table

__all__ = ["add_report", "fold_table", "show_report", "summary_table"]


def add_report(sub) -> None:
    p = sub.add_parser("report", help="per-fold and mean ± std WA/UA of one or more runs")
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--plot", type=Path, metavar="PNG", help="also plot WA/UA per run and validation curves")
    p.set_defaults(func=cmd_report)


def show_report(runs, as_json: bool = False, plot: Path | None = None) -> None:
    from serkd.experiments.report import collect

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
