"""``serkd report``: fold results (run folders, a grid's ``results.db``, report-shaped JSON files) → summaries,
a paper-style table, paired tests, per-class recall.

Data flow: :mod:`.load` reads :class:`~serkd.train.results.FoldResult` JSON (one row per fold and seed, with its
source and config); :mod:`.stats` groups them into configurations (mean ± std over folds × seeds, marks,
per-class metrics) and runs the paired Wilcoxon tests; :mod:`.formats` pivots the summary into one table per
corpus (rows student × features × variant, columns methods) and writes ``md``/``csv``/``latex``. The library
draws nothing: the CLI renders the same dicts as rich tables. Fractions in JSON, percentages in tables.

JSON (:func:`report_json`): ``{"rows": [...], "summary": [{..., "config", "variant", "wa_mean", "wa_std",
"ua_mean", "ua_std", "n", "n_expected", "n_folds", "n_seeds", "complete", "marks", "sources", "recall",
"macro_f1", "top_share"}], "runs": [{"run", "status", "folds_done", "folds_expected", "reason"}], "tests":
[{"corpus", "student", "features", "variant", "config", "method", "baseline", "n", "p_wa", "p_ua",
"mean_diff_wa", "mean_diff_ua", "note"}]}``.

    from serkd.experiments.report import collect, format_text
    print(format_text(collect(["runs/ce", "runs/kd"]), "md"))
"""

from __future__ import annotations

from pathlib import Path

from serkd.errors import SerkdError
from serkd.experiments.report.formats import (
    FORMATS,
    cell_text,
    column_labels,
    count_text,
    csv_text,
    format_text,
    mean_std,
    paper_tables,
    per_class_rows,
    tests_rows,
)
from serkd.experiments.report.load import ROW_KEYS, load, load_rows, row_of
from serkd.experiments.report.stats import (
    BASELINES,
    GROUP_KEYS,
    MARK_COLLAPSED,
    MARK_INCOMPLETE,
    MARK_POOLED,
    MIN_PAIRS,
    class_metrics,
    config_identity,
    confusion_metrics,
    members_of,
    paired_test,
    summarise,
    wilcoxon_tests,
)
from serkd.layout import DB_NAME, RESULTS

__all__ = ["BASELINES", "FORMATS", "GROUP_KEYS", "MARK_COLLAPSED", "MARK_INCOMPLETE", "MARK_POOLED", "MIN_PAIRS",
           "ROW_KEYS", "cell_text", "class_metrics", "collect", "column_labels", "config_identity",
           "confusion_metrics", "count_text", "csv_text", "format_text", "load", "load_rows", "mean_std",
           "members_of", "paired_test", "paper_tables", "per_class_rows", "report_json", "row_of", "summarise",
           "tests_rows", "wilcoxon_tests"]


def collect(paths: list[str | Path]) -> dict:
    """Everything ``serkd report`` shows: ``rows``, ``summary``, ``runs`` (each path's state), ``tests``,
    ``tables`` (see the module docstring). Unreadable or unfinished folders are listed in ``runs``;
    only when no path holds any result is it an error."""
    rows, runs = load(paths)
    if not rows:
        why = "; ".join(f"{r['run']}: {r.get('reason') or r['status']}" for r in runs)
        raise SerkdError(f"no fold results to report ({why}); expected RUN_DIR/<fold>/{RESULTS}, a {DB_NAME} or a "
                         "JSON file of rows")
    summary = summarise(rows)
    return {"rows": rows, "summary": summary, "runs": runs, "tests": wilcoxon_tests(rows),
            "tables": paper_tables(summary)}


def report_json(report: dict) -> dict:
    """The report as printed by ``--json``: rows without their per-epoch history."""
    rows = [{k: v for k, v in row.items() if k not in ("history", "run_folds")} for row in report["rows"]]
    return {**{k: v for k, v in report.items() if k != "tables"}, "rows": rows}
