"""Rich terminal tables of a report (:func:`serkd.experiments.report.collect`) and of ``serkd eval`` /
``serkd teacher eval``: the library computes the rows, this module draws them."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from serkd.experiments.report.formats import (
    PER_CLASS_TITLE,
    TESTS_TITLE,
    count_text,
    has_variants,
    mean_std,
    per_class_rows,
    tests_rows,
)

_LEFT = ("run", "fold", "seed", "test", "marks", "corpus", "student", "features", "config", "method", "baseline",
         "teacher", "note", "top class", "path", "status", "why")


def _table(title: str, header: list[str], body: list[list[str]], caption: str | None = None) -> Table:
    table = Table(title=title, caption=caption)
    for column in header:
        table.add_column(column, justify="left" if column in _LEFT else "right")
    for row in body:
        table.add_row(*row)
    return table


def fold_table(report: dict, title: str = "per fold") -> Table:
    body = []
    for row in report["rows"]:
        seed, best = row.get("seed"), row.get("best_epoch")
        body.append([Path(str(row["run"])).name, str(row["fold"]), "-" if seed is None else str(seed),
                     " ".join(row.get("test") or []), "-" if best in (None, "") else str(best),
                     f"{100 * row['wa']:.2f}", f"{100 * row['ua']:.2f}", ", ".join(row.get("marks") or [])])
    return _table(title, ["run", "fold", "seed", "test", "best epoch", "WA %", "UA %", "marks"], body)


def summary_table(summary: list[dict], title: str = "mean ± std over folds × seeds") -> Table:
    config = has_variants(summary)
    header = ["corpus", "student", "features", *(["config"] if config else []), "method", "teacher", "epochs", "n",
              "WA %", "UA %", "marks"]
    body = []
    for s in summary:
        teacher = Path(str(s["teacher"])).name if s.get("teacher") and s.get("role") != "teacher" else "-"
        body.append([str(s.get("corpus")), str(s["student"]), str(s["features"]),
                     *([s.get("variant") or ""] if config else []), s.get("label") or str(s["method"]), teacher,
                     str(s.get("epochs") or "-"), count_text(s) if "n" in s else str(s["n_folds"]),
                     mean_std(s["wa_mean"], s["wa_std"]), mean_std(s["ua_mean"], s["ua_std"]),
                     ", ".join(s.get("marks") or [])])
    return _table(title, header, body)


def paper_table(table: dict) -> Table:
    config = any(r.get("variant") for r in table["rows"])
    body = [[str(r["student"]), str(r["features"] or "-"), *([r["variant"]] if config else []),
             *(r["cells"].get(c, "") for c in table["columns"])] for r in table["rows"]]
    return _table(f"{table['corpus']}: WA / UA % mean ± std (n folds × seeds)",
                  ["student", "features", *(["config"] if config else []), *table["columns"]], body,
                  caption="\n".join(f"* {n}" for n in table["notes"]) or None)


def tests_table(tests: list[dict]) -> Table:
    return _table(TESTS_TITLE, *tests_rows(tests))


def per_class_table(summary: list[dict]) -> Table:
    return _table(PER_CLASS_TITLE, *per_class_rows(summary))


def runs_table(runs: list[dict]) -> Table | None:
    """The paths that are not complete run folders, or ``None`` when every one is."""
    shown = [r for r in runs if r["status"] not in ("complete", "results.db", "json")]
    if not shown:
        return None
    body = []
    for r in shown:
        expected = r.get("folds_expected")
        done = len(r.get("folds_done") or [])
        body.append([r["run"], r["status"], f"{done}/{len(expected)}" if expected else str(done), r.get("reason", "")])
    return _table("incomplete or unreadable", ["path", "status", "folds", "why"], body)
