"""A report as text: the paper-style table per corpus, the paired tests and per-class recall, as Markdown,
LaTeX or one CSV. Percentages in the Markdown/LaTeX tables; the CSV holds numbers, one per column, as
fractions (the JSON's keys and units), so a spreadsheet or pandas reads it without parsing cells.

Rich terminal tables are drawn by the CLI (``serkd.cli.report_tables``) from the same rows.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from serkd.errors import SerkdError
from serkd.experiments.report.stats import column_order
from serkd.train.results import MARK_SPEAKER_NORMALISED

FORMATS = ("md", "csv", "latex")
SPEAKER_NORMALISED_NOTE = (f"{MARK_SPEAKER_NORMALISED}: features standardised with each speaker's own statistics, "
                           "the test speaker's taken from its own unlabelled test audio (transductive, as is usual in "
                           "SER papers; a deployment needs some audio of the speaker first)")
TESTS_TITLE = "paired Wilcoxon signed-rank over (fold, seed): method − baseline"
PER_CLASS_TITLE = "per-class recall % and macro-F1 % (confusions summed over folds × seeds)"
# the CSV: one row per configuration (table=summary) and per test (table=test), numbers in their own columns
CSV_COLUMNS = ("table", "corpus", "student", "features", "config", "method", "column", "baseline", "teacher",
               "epochs", "selection", "n", "n_expected", "n_folds", "n_seeds", "wa_mean", "wa_std", "ua_mean",
               "ua_std", "macro_f1", "top_class", "top_share", "p_wa", "p_ua", "mean_diff_wa", "mean_diff_ua",
               "marks", "sources", "note")


# ---------------------------------------------------------------- paper table

def paper_tables(summary: list[dict]) -> list[dict]:
    """One table per corpus: ``{"corpus", "columns": [labels], "rows": [{"student", "features", "variant", "cells":
    {label: text}}], "notes": [...]}``; teachers come first as their own rows with the ``teacher`` column.
    A row is a student × features × ``variant`` (the config fields that differ, e.g. ``recipe=strong``)."""
    tables = []
    for corpus in dict.fromkeys(s["corpus"] for s in summary):
        groups = [s for s in summary if s["corpus"] == corpus]
        labels = column_labels(groups)
        columns = list(dict.fromkeys(labels[id(g)] for g in sorted(groups, key=column_order)))
        rows: dict[tuple, dict] = {}
        notes = []
        for g in sorted(groups, key=lambda g: g.get("role") != "teacher"):
            variant = g.get("variant") or ""
            row = rows.setdefault((g["student"], g["features"], variant), {
                "student": g["student"], "features": g["features"], "variant": variant, "cells": {}})
            row["cells"][labels[id(g)]] = cell_text(g)
            if g["marks"]:
                where = "/".join(str(p) for p in (g["student"], g["features"], variant, labels[id(g)]) if p)
                notes.append(f"{where}: {', '.join(g['marks'])}")
        if any(MARK_SPEAKER_NORMALISED in g["marks"] for g in groups):
            notes.append(SPEAKER_NORMALISED_NOTE)
        tables.append({"corpus": corpus, "columns": columns, "rows": list(rows.values()), "notes": notes})
    return tables


def column_labels(groups: list[dict]) -> dict[int, str]:
    """A column per method and parameters; teacher, epochs and selection are added only where they differ."""
    labels = {}
    for g in groups:
        same = [o for o in groups if o["label"] == g["label"]]
        parts = [g["label"]]
        if len({o.get("teacher") for o in same}) > 1 and g.get("teacher"):
            parts.append(f"@{Path(str(g['teacher'])).name}")
        if len({o.get("epochs") for o in same}) > 1 and g.get("epochs") is not None:
            parts.append(f"{g.get('epochs')}ep")
        if len({o.get("selection") for o in same}) > 1 and g.get("selection") is not None:
            parts.append(f"sel={g.get('selection')}")
        labels[id(g)] = " ".join(parts)
    return labels


def mean_std(mean: float, std: float | None) -> str:
    """Percent, ``64.58 ± 1.20``; a single value has no spread: ``64.58``."""
    return f"{100 * mean:.2f}" if std is None else f"{100 * mean:.2f} ± {100 * std:.2f}"


def count_text(s: dict) -> str:
    """``5``, or ``1/3`` when results are missing."""
    return f"{s['n']}/{s['n_expected']}" if s.get("n_expected") and s["n"] != s["n_expected"] else str(s["n"])


def cell_text(s: dict) -> str:
    mark = " *" if s.get("marks") else ""
    return f"{mean_std(s['wa_mean'], s['wa_std'])} / {mean_std(s['ua_mean'], s['ua_std'])} ({count_text(s)}){mark}"


def p_text(p: float | None) -> str:
    return "-" if p is None else f"{p:.3g}"


def has_variants(items: list[dict]) -> bool:
    return any(i.get("variant") for i in items)


# ---------------------------------------------------------------- rows of the other tables

def tests_rows(tests: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The paired tests as display rows (percentage points; p with 3 significant digits)."""
    config = has_variants(tests)
    header = ["corpus", "student", "features", *(["config"] if config else []), "method", "baseline", "n",
              "ΔWA pp", "ΔUA pp", "p WA", "p UA", "note"]
    body = [[str(t["corpus"]), str(t["student"]), str(t["features"] or ""), *([t.get("variant", "")] if config else []),
             t["method"], t["baseline"], str(t["n"]), f"{100 * t['mean_diff_wa']:+.2f}",
             f"{100 * t['mean_diff_ua']:+.2f}", p_text(t["p_wa"]), p_text(t["p_ua"]), t["note"] or ""]
            for t in tests]
    return header, body


def per_class_rows(summary: list[dict]) -> tuple[list[str], list[list[str]]]:
    labels = list(dict.fromkeys(lab for s in summary for lab in s.get("recall") or {}))
    config = has_variants(summary)
    header = ["corpus", "student", "features", *(["config"] if config else []), "method", "n", *labels, "macro-F1",
              "top class"]
    body = []
    for s in summary:
        if "recall" not in s:
            continue
        recall = [("-" if s["recall"].get(lab) is None else f"{100 * s['recall'][lab]:.1f}") for lab in labels]
        top = f"{s['top_class']} {100 * s['top_share']:.0f}%" + (" collapsed" if s["collapsed"] else "")
        f1 = "-" if s["macro_f1"] is None else f"{100 * s['macro_f1']:.1f}"
        body.append([str(s["corpus"]), str(s["student"]), str(s["features"] or ""),
                     *([s.get("variant", "")] if config else []), s["label"], count_text(s), *recall, f1, top])
    return header, body


# ---------------------------------------------------------------- text formats

def format_text(report: dict, fmt: str, per_class: bool = False) -> str:
    """The paper tables, the paired tests (and ``per_class`` tables) as ``md``, ``csv`` or ``latex``."""
    if fmt not in FORMATS:
        raise SerkdError(f"format: one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "csv":
        return csv_text(report, per_class)
    parts = []
    for table in report["tables"]:
        caption = f"{table['corpus']}: WA / UA % mean ± std (n folds × seeds)"
        parts.append(_caption(caption, fmt))
        config = any(r["variant"] for r in table["rows"])
        body = [[r["student"], r["features"] or "", *([r["variant"]] if config else []),
                 *(r["cells"].get(c, "") for c in table["columns"])] for r in table["rows"]]
        parts.append(_render(["student", "features", *(["config"] if config else []), *table["columns"]], body, fmt))
        if table["notes"]:
            parts.append("\n".join(("* " if fmt == "md" else "% * ") + n for n in table["notes"]) + "\n")
    if report.get("tests"):
        parts.append(_caption(TESTS_TITLE, fmt))
        parts.append(_render(*tests_rows(report["tests"]), fmt))
    if per_class:
        parts.append(_caption(PER_CLASS_TITLE, fmt))
        parts.append(_render(*per_class_rows(report["summary"]), fmt))
    return "\n".join(parts)


def _caption(text: str, fmt: str) -> str:
    return f"### {text}\n" if fmt == "md" else f"% {text}"


def csv_text(report: dict, per_class: bool = False) -> str:
    """One CSV of numbers: a ``summary`` row per configuration and a ``test`` row per paired test (fractions;
    empty cells where a value does not apply); ``per_class`` adds ``recall_<class>`` columns."""
    labels = list(dict.fromkeys(lab for s in report["summary"] for lab in s.get("recall") or {})) if per_class else []
    columns = [*CSV_COLUMNS, *(f"recall_{lab}" for lab in labels)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for tables in report["tables"]:
        groups = [s for s in report["summary"] if s["corpus"] == tables["corpus"]]
        for s, column in zip(groups, (column_labels(groups)[id(g)] for g in groups)):
            row = {**{k: s.get(k) for k in CSV_COLUMNS if k in s}, "table": "summary", "config": s.get("variant", ""),
                   "method": s["label"], "column": column, "marks": " ".join(s.get("marks") or []),
                   "sources": " ".join(s.get("sources") or [])}
            row.update({f"recall_{lab}": (s.get("recall") or {}).get(lab) for lab in labels})
            writer.writerow(row)
    for t in report.get("tests") or []:
        writer.writerow({**{k: t.get(k) for k in CSV_COLUMNS if k in t}, "table": "test",
                         "config": t.get("variant", "")})
    return buffer.getvalue()


def _render(header: list[str], body: list[list[str]], fmt: str) -> str:
    if fmt == "md":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in body]
        return "\n".join(lines) + "\n"
    numeric = [all(_NUMERIC.match(str(row[i])) for row in body) for i in range(len(header))]
    lines = [r"\begin{tabular}{" + "".join("r" if n else "l" for n in numeric) + "}", r"\hline",
             " & ".join(_latex(h) for h in header) + r" \\", r"\hline"]
    lines += [" & ".join(_latex(c) for c in row) + r" \\" for row in body]
    return "\n".join([*lines, r"\hline", r"\end{tabular}"]) + "\n"


_NUMERIC = re.compile(r"^[\d.\s±/()*%+-]*$")  # numbers, mean ± std cells, counts: right-aligned


_LATEX = {"\\": r"\textbackslash{}", **{c: "\\" + c for c in "&%$#_{}"}, "±": r"$\pm$", "−": "-",
          "Δ": r"$\Delta$", "×": r"$\times$"}


def _latex(text) -> str:
    return "".join(_LATEX.get(char, char) for char in str(text))
