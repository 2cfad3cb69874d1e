"""Per-fold and mean ± std WA/UA over runs, as a rich table or JSON.

JSON: ``{"rows": [{"fold", "test", "wa", "ua", ...run config...}], "summary": [{..., "wa_mean",
"wa_std", "ua_mean", "ua_std", "n_folds"}]}``; fractions in JSON, percentages in tables.
The std is the population std over folds (numpy's default, ddof=0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.table import Table

from serkd.errors import SerkdError
from serkd.io import read_json
from serkd.train.results import FoldResult

ROW_KEYS = ("fold", "test", "valid", "wa", "ua", "valid_wa", "valid_ua", "best_epoch", "epochs", "selection",
            "marks", "n_train", "n_valid", "n_test", "absent_test_classes", "corpus", "student", "method",
            "method_params", "features", "teacher", "seed", "data_hash", "git_commit")
GROUP_KEYS = ("run", "corpus", "student", "method", "features", "teacher", "selection")


def collect(run_dirs: list[str | Path]) -> dict:
    rows = []
    for run_dir in map(Path, run_dirs):
        if run_dir.suffix == ".db":
            from serkd.experiments.store import read_results

            rows += [{k: v for k, v in r.items() if k not in ("history", "confusion")} for r in read_results(run_dir)]
            continue
        files = sorted(run_dir.glob("*/results.json"))
        if not files:
            raise SerkdError(f"{run_dir}: no fold results (expected {run_dir}/<fold>/results.json)")
        for file in files:
            try:
                result = FoldResult.from_json(read_json(file)).to_json()
            except (OSError, ValueError, TypeError) as exc:
                raise SerkdError(f"{file}: unreadable fold result ({exc})") from None
            extra = {k: v for k, v in result.items() if k not in ROW_KEYS and k not in ("history", "confusion")}
            rows.append({"run": str(run_dir), **{k: result.get(k) for k in ROW_KEYS}, **extra})
    return {"rows": rows, "summary": summarise(rows)}


def summarise(rows: list[dict], group_keys=GROUP_KEYS) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(_hashable(row.get(k)) for k in group_keys), []).append(row)
    summary = []
    for key, members in groups.items():
        wa = np.array([m["wa"] for m in members], dtype=float)
        ua = np.array([m["ua"] for m in members], dtype=float)
        marks = sorted({mark for m in members for mark in (m.get("marks") or [])})
        summary.append({**dict(zip(group_keys, key)), "wa_mean": float(wa.mean()), "wa_std": float(wa.std()),
                        "ua_mean": float(ua.mean()), "ua_std": float(ua.std()), "n_folds": len(members),
                        "marks": marks})
    return summary


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def fold_table(report: dict, title: str = "per fold") -> Table:
    table = Table(title=title)
    for column in ("run", "fold", "test", "best epoch", "WA %", "UA %", "marks"):
        table.add_column(column, justify="right" if column.endswith("%") or column == "best epoch" else "left")
    for row in report["rows"]:
        table.add_row(Path(row["run"]).name, row["fold"], " ".join(row["test"] or []), str(row["best_epoch"]),
                      f"{100 * row['wa']:.2f}", f"{100 * row['ua']:.2f}", ", ".join(row.get("marks") or []))
    return table


def summary_table(summary: list[dict], title: str = "mean ± std over folds", label_teacher: bool = True) -> Table:
    table = Table(title=title)
    for column in ("run", "student", "method", "features", "folds", "WA %", "UA %", "marks"):
        table.add_column(column, justify="right" if "%" in column or column == "folds" else "left")
    for s in summary:
        table.add_row(Path(s["run"]).name, str(s["student"]), str(s["method"]), str(s["features"]), str(s["n_folds"]),
                      f"{100 * s['wa_mean']:.2f} ± {100 * s['wa_std']:.2f}",
                      f"{100 * s['ua_mean']:.2f} ± {100 * s['ua_std']:.2f}", ", ".join(s.get("marks") or []))
    return table
