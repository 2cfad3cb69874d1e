"""``serkd report``: fold results (run folders or a grid's ``results.db``) → summaries, a paper-style table,
paired tests, per-class recall.

Data flow: :func:`load_rows` reads :class:`~serkd.train.results.FoldResult` JSON (one row per fold and seed);
:func:`collect` adds the run folders' state (``runs``: which expected folds are missing), the
:func:`summarise` groups (mean ± std over folds × seeds of one corpus, student, features, method, method
parameters, teacher, epochs, selection) and the :func:`wilcoxon_tests`; :func:`paper_tables` pivots the
summary into one table per corpus (rows student × features, columns methods); renderers below draw rich
tables or ``md``/``csv``/``latex`` text. Fractions in JSON, percentages in tables. The std is the
population std over folds × seeds (numpy's default, ddof=0), ``None`` when there is one value.

JSON (:func:`report_json`): ``{"rows": [...], "summary": [{..., "wa_mean", "wa_std", "ua_mean", "ua_std",
"n", "n_expected", "n_folds", "n_seeds", "complete", "marks", "recall", "macro_f1", "top_share"}],
"runs": [{"run", "status", "folds_done", "folds_expected", "reason"}], "tests": [{"corpus", "student",
"features", "method", "baseline", "n", "p_wa", "p_ua", "mean_diff_wa", "mean_diff_ua", "note"}]}``.
"""

from __future__ import annotations

import csv
import io
import json
import re
import warnings
from pathlib import Path

import numpy as np
from rich.table import Table

from serkd.errors import SerkdError
from serkd.io import read_json
from serkd.layout import DB_NAME, RESULTS, RUN_FILE
from serkd.train.results import MARK_SPEAKER_NORMALISED, FoldResult

ROW_KEYS = ("fold", "test", "valid", "wa", "ua", "valid_wa", "valid_ua", "best_epoch", "epochs", "selection",
            "marks", "n_train", "n_valid", "n_test", "absent_test_classes", "corpus", "student", "method",
            "method_params", "features", "teacher", "seed", "role", "labels", "confusion", "history", "data_hash",
            "config_hash", "git_commit")
# one summary row = one configuration; folds and seeds are what its mean ± std runs over
GROUP_KEYS = ("corpus", "student", "features", "method", "method_params", "teacher", "epochs", "selection", "role")
BASELINES = ("ce", "kd")
MIN_PAIRS = 6  # a two-sided exact Wilcoxon's smallest p is 2 / 2**n: 0.0625 at n = 5, 0.03125 at n = 6
COLLAPSE_SHARE = 0.8  # one class takes this share of the predictions...
COLLAPSE_EXCESS = 0.1  # ...and that much more than its share of the true labels
MARK_INCOMPLETE = "incomplete"
MARK_COLLAPSED = "collapsed"
SPEAKER_NORMALISED_NOTE = (f"{MARK_SPEAKER_NORMALISED}: features standardised with each speaker's own statistics, "
                           "the test speaker's taken from its own unlabelled test audio (transductive, as is usual in "
                           "SER papers; a deployment needs some audio of the speaker first)")


# ---------------------------------------------------------------- loading

def load_rows(paths: list[str | Path]) -> list[dict]:
    """One dict per (fold, seed): ``FoldResult.to_json()`` plus ``run``. A ``.db`` path (or a folder holding
    ``results.db``) is read through :func:`serkd.experiments.store.read_results`; a folder through its
    ``*/results.json``. Folders without results are skipped here (see :func:`collect` for the why)."""
    return _load(paths)[0]


def _load(paths: list[str | Path]) -> tuple[list[dict], list[dict]]:
    rows, runs = [], []
    for path in map(Path, paths):
        db = path if path.suffix == ".db" else path / DB_NAME
        if db.is_file():
            db_rows = _read_db(db)
            rows += db_rows
            runs.append({"run": str(db), "status": "results.db", "folds_done": len(db_rows)})
        elif path.is_dir():
            folder_rows, run = _read_run_folder(path)
            rows += folder_rows
            runs.append(run)
        else:
            runs.append({"run": str(path), "status": "unreadable",
                         "reason": "no such file or folder" if not path.exists() else "not a run folder or results.db"})
    return rows, runs


def _read_db(db: Path) -> list[dict]:
    try:
        from serkd.experiments import store
    except ImportError:
        raise SerkdError(f"{db}: results.db support needs serkd.experiments.store") from None
    rows = []
    for data in store.read_results(db):
        row = _row(data)
        row["run"] = str(data.get("run") or db)
        rows.append(row)
    return rows


def _read_run_folder(folder: Path) -> tuple[list[dict], dict]:
    expected = None
    if (folder / RUN_FILE).is_file():
        try:
            expected = [f["name"] for f in read_json(folder / RUN_FILE).get("folds", [])] or None
        except (OSError, ValueError, TypeError, KeyError):
            expected = None
    rows, problems = [], []
    for file in sorted(folder.glob("*/" + RESULTS)):
        try:
            row = _row(read_json(file))
        except (OSError, ValueError, TypeError) as exc:
            problems.append(f"{file.parent.name}: unreadable ({exc})")
            continue
        rows.append({"run": str(folder), "run_folds": expected, **row})
    done = [r["fold"] for r in rows]
    run = {"run": str(folder), "folds_done": done, "folds_expected": expected}
    if not rows and expected is None and not (folder / RUN_FILE).is_file():
        return [], {**run, "status": "unreadable", "reason": f"not a run folder (no {RUN_FILE}, no <fold>/{RESULTS})"}
    missing = [f for f in expected or [] if f not in done]
    if rows and not missing and not problems:
        return rows, {**run, "status": "complete"}
    reason = "; ".join(([f"no fold finished of {len(expected or [])}"] if not rows else [])
                       + ([f"missing {', '.join(missing)}"] if rows and missing else []) + problems)
    return rows, {**run, "status": "incomplete", "reason": reason}


def _row(data: dict) -> dict:
    result = FoldResult.from_json(data).to_json()
    extra = {k: v for k, v in data.items() if k not in result}  # the store's run, unit_key, ...
    return {**{k: result.get(k) for k in ROW_KEYS}, **{k: v for k, v in result.items() if k not in ROW_KEYS},
            **extra}


def collect(paths: list[str | Path]) -> dict:
    """Everything ``serkd report`` shows: ``rows``, ``summary``, ``runs`` (each path's state), ``tests``,
    ``tables`` (see the module docstring). Unreadable or unfinished folders are listed in ``runs``;
    only when no path holds any result is it an error."""
    rows, runs = _load(paths)
    if not rows:
        why = "; ".join(f"{r['run']}: {r.get('reason') or r['status']}" for r in runs)
        raise SerkdError(f"no fold results to report ({why}); expected RUN_DIR/<fold>/{RESULTS} or a {DB_NAME}")
    summary = summarise(rows)
    return {"rows": rows, "summary": summary, "runs": runs, "tests": wilcoxon_tests(rows),
            "tables": paper_tables(summary)}


def report_json(report: dict) -> dict:
    """The report as printed by ``--json``: rows without their per-epoch history."""
    rows = [{k: v for k, v in row.items() if k not in ("history", "run_folds")} for row in report["rows"]]
    return {**{k: v for k, v in report.items() if k != "tables"}, "rows": rows}


# ---------------------------------------------------------------- summary

def summarise(rows: list[dict], group_keys=GROUP_KEYS) -> list[dict]:
    """Mean ± std over folds × seeds per configuration (``group_keys``), with n of N, marks, per-class recall."""
    return [entry for entry, _ in _summarise(rows, group_keys)]


def members_of(entry: dict, rows: list[dict], group_keys=GROUP_KEYS) -> list[dict]:
    """The rows a summary entry averages."""
    key = tuple(_hashable(entry.get(k)) for k in group_keys)
    return [r for r in rows if tuple(_hashable(r.get(k)) for k in group_keys) == key]


def _summarise(rows: list[dict], group_keys=GROUP_KEYS) -> list[tuple[dict, list[dict]]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(_hashable(row.get(k)) for k in group_keys), []).append(row)
    summary = []
    for members in groups.values():
        wa = np.array([m["wa"] for m in members], dtype=float)
        ua = np.array([m["ua"] for m in members], dtype=float)
        n = len(members)
        expected = _expected(members, rows)
        marks = sorted({mark for m in members for mark in (m.get("marks") or [])})
        entry = {**{k: members[0].get(k) for k in group_keys},
                 "run": members[0].get("run"), "runs": sorted({str(m.get("run")) for m in members}),
                 "wa_mean": float(wa.mean()), "wa_std": float(wa.std()) if n > 1 else None,
                 "ua_mean": float(ua.mean()), "ua_std": float(ua.std()) if n > 1 else None,
                 "n": n, "n_expected": expected, "n_folds": len({m.get("fold") for m in members}),
                 "n_seeds": len({m.get("seed") for m in members}),
                 "complete": None if expected is None else n >= expected}
        entry.update(class_metrics(members))
        if entry["complete"] is False:
            marks.append(MARK_INCOMPLETE)
        if entry.get("collapsed"):
            marks.append(MARK_COLLAPSED)
        entry["marks"] = marks
        entry["label"] = _params_text(entry)
        summary.append((entry, members))
    corpora = list(dict.fromkeys(e["corpus"] for e, _ in summary))  # corpus by corpus, teachers first, ce, kd...
    return sorted(summary, key=lambda g: (corpora.index(g[0]["corpus"]), g[0].get("role") != "teacher",
                                          _column_order(g[0])))


def _expected(members: list[dict], rows: list[dict]) -> int | None:
    """Expected (fold, seed) pairs: a run folder's run.json folds (one seed per folder); for a grid's rows the
    store's ``folds_expected`` when given, else every fold × seed its rows of this corpus hold."""
    runs = {m.get("run"): m for m in members}
    if all("run_folds" in m for m in members):
        if any(m.get("run_folds") is None for m in runs.values()):
            return None
        return sum(len(m["run_folds"]) for m in runs.values())
    if all(isinstance(m.get("folds_expected"), int) for m in members):
        return members[0]["folds_expected"] * len({m.get("seed") for m in members})
    if not any("unit_key" in m for m in members):
        return None  # rows from elsewhere (teacher eval): nothing says how many there should be
    corpus = [r for r in rows if r.get("corpus") == members[0].get("corpus") and "unit_key" in r]
    return len({r.get("fold") for r in corpus}) * len({r.get("seed") for r in corpus})


def class_metrics(members: list[dict]) -> dict:
    """Per-class recall and macro-F1 from the confusion matrices summed over ``members`` (empty when their
    labels differ or none is stored), and whether one class takes nearly all predictions (``collapsed``).
    Macro-F1 averages the classes present in the test folds; recall of an absent class is ``None``."""
    labels = members[0].get("labels")
    if not labels or any(m.get("labels") != labels or not m.get("confusion") for m in members):
        return {}
    matrix = np.sum([np.asarray(m["confusion"], dtype=np.int64) for m in members], axis=0)
    return {"labels": list(labels), "confusion": matrix.tolist(), **confusion_metrics(matrix, labels)}


def confusion_metrics(matrix: np.ndarray, labels: list[str]) -> dict:
    matrix = np.asarray(matrix, dtype=float)
    true, predicted, hits = matrix.sum(axis=1), matrix.sum(axis=0), np.diag(matrix)
    recall = np.divide(hits, true, out=np.zeros_like(hits), where=true > 0)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(hits), where=precision + recall > 0)
    present = true > 0
    total = matrix.sum()
    top = int(predicted.argmax()) if total else 0
    top_share = float(predicted[top] / total) if total else 0.0
    true_share = float(true[top] / total) if total else 0.0
    return {"recall": {label: (float(recall[i]) if present[i] else None) for i, label in enumerate(labels)},
            "macro_f1": float(f1[present].mean()) if present.any() else None,
            "top_class": labels[top], "top_share": top_share,
            "collapsed": bool(total) and top_share >= COLLAPSE_SHARE and top_share - true_share >= COLLAPSE_EXCESS}


def _hashable(value):
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return tuple(value) if isinstance(value, list) else value


def _params_text(s: dict) -> str:
    """``kd`` or ``kd(T=4,alpha=0.5)``: the column a summary row goes to."""
    params = s.get("method_params") or {}
    if isinstance(params, str):
        params = json.loads(params)
    inner = ",".join(f"{k}={v}" for k, v in sorted(params.items()))
    return f"{s['method']}({inner})" if inner else str(s["method"])


# ---------------------------------------------------------------- paired tests

def wilcoxon_tests(rows: list[dict]) -> list[dict]:
    """Each student method against ``ce`` and against ``kd`` of the same corpus, student and features: a paired
    two-sided Wilcoxon signed-rank test over the (fold, seed) pairs both hold (``scipy.stats.wilcoxon``).
    Under :data:`MIN_PAIRS` pairs p cannot reach 0.05: p is ``None`` and ``note`` says so."""
    cells: dict[tuple, list[tuple[dict, list[dict]]]] = {}
    for entry, members in _summarise(rows):
        if entry.get("role") != "teacher":
            cells.setdefault((entry["corpus"], entry["student"], entry["features"]), []).append((entry, members))
    tests = []
    for (corpus, student, features), groups in cells.items():
        chosen = {b: _baseline(groups, b) for b in BASELINES}
        for baseline, base in chosen.items():
            if base is None:
                continue
            for entry, members in groups:
                if entry is base[0] or (baseline == "kd" and chosen["ce"] and entry is chosen["ce"][0]):
                    continue  # ce against kd is kd against ce, tested once
                test = paired_test(members, base[1])
                if test["n"]:
                    tests.append({"corpus": corpus, "student": student, "features": features,
                                  "method": entry["label"], "baseline": base[0]["label"], **test})
    return tests


def _baseline(groups: list[tuple[dict, list[dict]]], method: str) -> tuple[dict, list[dict]] | None:
    """The ``method`` group a table compares against: default parameters first, then the most results."""
    candidates = [g for g in groups if g[0]["method"] == method]
    return min(candidates, key=lambda g: (bool(g[0].get("method_params")), -g[0]["n"]), default=None)


def paired_test(members: list[dict], baseline: list[dict]) -> dict:
    """``n`` common (fold, seed) pairs, ``p_wa``, ``p_ua``, ``mean_diff_wa``, ``mean_diff_ua`` (members − baseline)."""
    ours = {(m.get("fold"), m.get("seed")): m for m in members}
    theirs = {(m.get("fold"), m.get("seed")): m for m in baseline}
    pairs = sorted(set(ours) & set(theirs), key=str)
    out = {"n": len(pairs)}
    notes = []
    for metric in ("wa", "ua"):
        a = np.array([ours[p][metric] for p in pairs], dtype=float)
        b = np.array([theirs[p][metric] for p in pairs], dtype=float)
        out[f"mean_diff_{metric}"] = float((a - b).mean()) if pairs else None
        out[f"p_{metric}"], note = _wilcoxon(a, b)
        if note and note not in notes:
            notes.append(note)
    out["note"] = "; ".join(notes) or None
    return out


def _wilcoxon(a: np.ndarray, b: np.ndarray) -> tuple[float | None, str | None]:
    if len(a) < MIN_PAIRS:
        return None, f"{len(a)} pair(s): p < 0.05 needs at least {MIN_PAIRS} (more folds or seeds)"
    if np.all(a == b):
        return 1.0, "all paired differences are zero"
    from scipy.stats import wilcoxon

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few non-zero differences: scipy warns, the p stands
        return float(wilcoxon(a, b).pvalue), None


# ---------------------------------------------------------------- paper table

def paper_tables(summary: list[dict]) -> list[dict]:
    """One table per corpus: ``{"corpus", "columns": [labels], "rows": [{"student", "features", "cells":
    {label: text}}], "notes": [...]}``; teachers come first as their own rows with the ``teacher`` column."""
    tables = []
    for corpus in dict.fromkeys(s["corpus"] for s in summary):
        groups = [s for s in summary if s["corpus"] == corpus]
        labels = column_labels(groups)
        columns = list(dict.fromkeys(labels[id(g)] for g in sorted(groups, key=_column_order)))
        rows: dict[tuple, dict] = {}
        notes = []
        for g in sorted(groups, key=lambda g: g.get("role") != "teacher"):
            row = rows.setdefault((g["student"], g["features"]), {"student": g["student"], "features": g["features"],
                                                                  "cells": {}})
            row["cells"][labels[id(g)]] = cell_text(g)
            if g["marks"]:
                notes.append(f"{g['student']}/{g['features']}/{labels[id(g)]}: {', '.join(g['marks'])}")
        if any(MARK_SPEAKER_NORMALISED in g["marks"] for g in groups):
            notes.append(SPEAKER_NORMALISED_NOTE)
        tables.append({"corpus": corpus, "columns": columns, "rows": list(rows.values()), "notes": notes})
    return tables


def _column_order(g: dict) -> tuple:
    order = {"teacher": 0, "ce": 1, "kd": 2}
    return order.get(g["method"], 3), str(g["method"]), g["label"]


def column_labels(groups: list[dict]) -> dict[int, str]:
    """A column per method and parameters; teacher, epochs and selection are added only where they differ."""
    labels = {}
    for g in groups:
        same = [o for o in groups if o["label"] == g["label"]]
        parts = [g["label"]]
        if len({o.get("teacher") for o in same}) > 1 and g.get("teacher"):
            parts.append(f"@{Path(str(g['teacher'])).name}")
        if len({o.get("epochs") for o in same}) > 1:
            parts.append(f"{g.get('epochs')}ep")
        if len({o.get("selection") for o in same}) > 1:
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


# ---------------------------------------------------------------- text formats

def format_text(report: dict, fmt: str, per_class: bool = False) -> str:
    """The paper tables (and ``per_class`` tables) as ``md``, ``csv`` or ``latex``."""
    if fmt not in ("md", "csv", "latex"):
        raise SerkdError(f"format: one of md, csv, latex, not {fmt!r}")
    parts = []
    if fmt == "csv":  # one CSV: a corpus column, the union of method columns
        columns = list(dict.fromkeys(c for t in report["tables"] for c in t["columns"]))
        body = [[t["corpus"], r["student"], r["features"] or "", *(r["cells"].get(c, "") for c in columns)]
                for t in report["tables"] for r in t["rows"]]
        parts.append(_render(["corpus", "student", "features", *columns], body, fmt))
        if per_class:
            header, body = _per_class_rows(report["summary"], with_corpus=True)
            parts.append(_render(header, body, fmt))
        return "\n".join(parts)
    for table in report["tables"]:
        caption = f"{table['corpus']}: WA / UA % mean ± std (n folds × seeds)"
        parts.append(f"### {caption}\n" if fmt == "md" else f"% {caption}")
        body = [[r["student"], r["features"] or "", *(r["cells"].get(c, "") for c in table["columns"])]
                for r in table["rows"]]
        parts.append(_render(["student", "features", *table["columns"]], body, fmt))
        if table["notes"]:
            parts.append("\n".join(("* " if fmt == "md" else "% * ") + n for n in table["notes"]) + "\n")
    if per_class:
        header, body = _per_class_rows(report["summary"], with_corpus=True)
        parts.append("### per-class recall % and macro-F1 %\n" if fmt == "md" else "% per-class recall and macro-F1")
        parts.append(_render(header, body, fmt))
    return "\n".join(parts)


def _render(header: list[str], body: list[list[str]], fmt: str) -> str:
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(body)
        return buffer.getvalue()
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


def _latex(text) -> str:
    text = str(text)
    for char in "\\&%$#_{}":
        text = text.replace(char, "\\" + char if char != "\\" else r"\textbackslash{}")
    return text.replace("±", r"$\pm$")


def _per_class_rows(summary: list[dict], with_corpus: bool = False) -> tuple[list[str], list[list[str]]]:
    labels = list(dict.fromkeys(lab for s in summary for lab in s.get("recall") or {}))
    header = [*(["corpus"] if with_corpus else []), "student", "features", "method", "n", *labels, "macro-F1",
              "top class"]
    body = []
    for s in summary:
        if "recall" not in s:
            continue
        recall = [("-" if s["recall"].get(lab) is None else f"{100 * s['recall'][lab]:.1f}") for lab in labels]
        top = f"{s['top_class']} {100 * s['top_share']:.0f}%" + (" collapsed" if s["collapsed"] else "")
        body.append([*([s["corpus"]] if with_corpus else []), str(s["student"]), str(s["features"] or ""),
                     s["label"], count_text(s), *recall, f"{100 * s['macro_f1']:.1f}", top])
    return header, body


# ---------------------------------------------------------------- rich tables

def fold_table(report: dict, title: str = "per fold") -> Table:
    table = Table(title=title)
    for column in ("run", "fold", "seed", "test", "best epoch", "WA %", "UA %", "marks"):
        table.add_column(column, justify="right" if column.endswith("%") or column == "best epoch" else "left")
    for row in report["rows"]:
        seed = row.get("seed")
        table.add_row(Path(str(row["run"])).name, row["fold"], "-" if seed is None else str(seed),
                      " ".join(row["test"] or []),
                      "-" if row.get("best_epoch") is None else str(row["best_epoch"]),
                      f"{100 * row['wa']:.2f}", f"{100 * row['ua']:.2f}",
                      ", ".join(row.get("marks") or []))
    return table


def summary_table(summary: list[dict], title: str = "mean ± std over folds × seeds") -> Table:
    table = Table(title=title)
    for column in ("corpus", "student", "features", "method", "teacher", "epochs", "n", "WA %", "UA %", "marks"):
        table.add_column(column, justify="right" if "%" in column or column in ("n", "epochs") else "left")
    for s in summary:
        teacher = Path(str(s["teacher"])).name if s.get("teacher") and s.get("role") != "teacher" else "-"
        table.add_row(str(s.get("corpus")), str(s["student"]), str(s["features"]), s.get("label") or str(s["method"]),
                      teacher, str(s.get("epochs") or "-"), count_text(s) if "n" in s else str(s["n_folds"]),
                      mean_std(s["wa_mean"], s["wa_std"]), mean_std(s["ua_mean"], s["ua_std"]),
                      ", ".join(s.get("marks") or []))
    return table


def paper_table(table: dict) -> Table:
    out = Table(title=f"{table['corpus']}: WA / UA % mean ± std (n folds × seeds)", caption="\n".join(
        f"* {n}" for n in table["notes"]) or None)
    for column in ("student", "features", *table["columns"]):
        out.add_column(column, justify="left" if column in ("student", "features") else "right")
    for row in table["rows"]:
        cells = [row["cells"].get(c, "") for c in table["columns"]]
        out.add_row(str(row["student"]), str(row["features"] or "-"), *cells)
    return out


def tests_table(tests: list[dict]) -> Table:
    table = Table(title="paired Wilcoxon signed-rank over (fold, seed): method − baseline")
    for column in ("corpus", "student", "features", "method", "baseline", "n", "ΔUA pp", "p UA", "p WA", "note"):
        table.add_column(column, justify="right" if column in ("n", "ΔUA pp", "p UA", "p WA") else "left")
    for t in tests:
        table.add_row(str(t["corpus"]), str(t["student"]), str(t["features"]), t["method"], t["baseline"], str(t["n"]),
                      f"{100 * t['mean_diff_ua']:+.2f}", _p_text(t["p_ua"]), _p_text(t["p_wa"]), t["note"] or "")
    return table


def _p_text(p: float | None) -> str:
    return "-" if p is None else f"{p:.3g}"


def per_class_table(summary: list[dict]) -> Table:
    header, body = _per_class_rows(summary, with_corpus=True)
    table = Table(title="per-class recall % and macro-F1 % (confusions summed over folds × seeds)")
    for column in header:
        table.add_column(column, justify="left" if column in ("corpus", "student", "features", "method",
                                                               "top class") else "right")
    for row in body:
        table.add_row(*row)
    return table


def runs_table(runs: list[dict]) -> Table | None:
    """The paths that are not complete run folders, or ``None`` when every one is."""
    shown = [r for r in runs if r["status"] not in ("complete", "results.db")]
    if not shown:
        return None
    table = Table(title="incomplete or unreadable")
    for column in ("path", "status", "folds", "why"):
        table.add_column(column)
    for r in shown:
        expected = r.get("folds_expected")
        done = len(r.get("folds_done") or [])
        table.add_row(r["run"], r["status"], f"{done}/{len(expected)}" if expected else str(done), r.get("reason", ""))
    return table
