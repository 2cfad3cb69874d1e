"""Loading a report's rows: one dict per (fold, seed) from every kind of result serkd writes.

- a run folder (``serkd train``, a teacher store of any kind, a grid's ``OUT/runs/<unit>``):
  ``*/results.json``, with ``run.json`` saying which folds to expect and the run's config (else each fold's
  ``checkpoint.json`` says its config);
- a grid's ``results.db`` (or the grid's output folder): through :func:`serkd.experiments.store.read_results`;
- a JSON file with ``rows`` (``serkd eval --json``, ``serkd teacher eval --json``, ``serkd report --json``).

Every row is :meth:`FoldResult.to_json` plus ``run`` (the run folder or grid unit), ``source`` (the path
given: what :mod:`~serkd.experiments.report.stats` pools over only when it says so) and ``config`` (the
hashed fields of the run's config, :func:`~serkd.experiments.report.stats.config_identity`).
"""

from __future__ import annotations

from pathlib import Path

from serkd.errors import SerkdError
from serkd.experiments.report.stats import config_identity
from serkd.io import read_json
from serkd.layout import DB_NAME, RESULTS, RUN_FILE
from serkd.train.results import FoldResult

ROW_KEYS = ("fold", "test", "valid", "wa", "ua", "valid_wa", "valid_ua", "best_epoch", "epochs", "selection",
            "marks", "n_train", "n_valid", "n_test", "absent_test_classes", "corpus", "student", "method",
            "method_params", "features", "teacher", "seed", "role", "labels", "confusion", "history", "data_hash",
            "config_hash", "git_commit")


def load_rows(paths: list[str | Path]) -> list[dict]:
    """One dict per (fold, seed) of every path (see the module docstring); paths without results are skipped
    here (:func:`load` says why)."""
    return load(paths)[0]


def load(paths: list[str | Path]) -> tuple[list[dict], list[dict]]:
    """``(rows, runs)``: the rows, and per path its state (``complete``, ``incomplete``, ``unreadable``,
    ``results.db``, ``json``) with the folds done and expected and the reason."""
    rows, runs = [], []
    for path in map(Path, paths):
        db = path if path.suffix == ".db" else path / DB_NAME
        if db.is_file():
            db_rows = _read_db(db)
            rows += db_rows
            runs.append({"run": str(db), "status": "results.db", "folds_done": len(db_rows)})
        elif path.is_file() and path.suffix == ".json":
            file_rows = _read_json_rows(path)
            rows += file_rows
            runs.append({"run": str(path), "status": "json", "folds_done": len(file_rows)})
        elif path.is_dir():
            folder_rows, run = _read_run_folder(path)
            rows += folder_rows
            runs.append(run)
        else:
            runs.append({"run": str(path), "status": "unreadable",
                         "reason": "no such file or folder" if not path.exists() else
                         "not a run folder, results.db or JSON file of rows"})
    return rows, runs


def _read_db(db: Path) -> list[dict]:
    try:
        from serkd.experiments import store
    except ImportError:
        raise SerkdError(f"{db}: results.db support needs serkd.experiments.store") from None
    rows = []
    for data in store.read_results(db):
        config = data.pop("run_config", None)
        row = row_of(data, source=str(db), config=config)
        row["run"] = str(data.get("run") or db)
        rows.append(row)
    return rows


def _read_json_rows(file: Path) -> list[dict]:
    """The ``rows`` of a report-shaped JSON file (``serkd eval --json > eval.json``)."""
    try:
        data = read_json(file)
    except (OSError, ValueError) as exc:
        raise SerkdError(f"{file}: not readable as JSON ({exc})") from None
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise SerkdError(f"{file}: expected a JSON object with \"rows\" (the --json output of serkd report, eval or "
                         "teacher eval)")
    out = []
    for i, data in enumerate(rows):
        try:
            row = row_of(data, source=str(file), config=None)
        except (TypeError, ValueError, KeyError) as exc:
            raise SerkdError(f"{file}: row {i}: not a fold result ({exc})") from None
        row["run"] = str(data.get("run") or file)
        out.append(row)
    return out


def _read_run_folder(folder: Path) -> tuple[list[dict], dict]:
    expected, config = None, None
    if (folder / RUN_FILE).is_file():
        try:
            record = read_json(folder / RUN_FILE)
            expected = [f["name"] for f in record.get("folds", [])] or None
            config = record.get("config")
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            expected = None
    rows, problems = [], []
    for file in sorted(folder.glob("*/" + RESULTS)):
        try:
            row = row_of(read_json(file), source=str(folder), config=config or _fold_config(file.parent))
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


def _fold_config(fold_dir: Path) -> dict | None:
    """A fold's own record of its config (its checkpoint's metadata): a grid's unit folders have no run.json."""
    from serkd.train.checkpoint import META  # torch, only for folders without run.json

    try:
        return read_json(fold_dir / META).get("config") if (fold_dir / META).is_file() else None
    except (OSError, ValueError, AttributeError):
        return None


def row_of(data: dict, source: str | None = None, config: dict | None = None) -> dict:
    """A report row from FoldResult JSON: the known fields first, extras (the store's ``unit_key``...) after;
    ``config`` from the run's recorded config when given, else the row's own (a re-read report)."""
    result = FoldResult.from_json(data).to_json()
    extra = {k: v for k, v in data.items() if k not in result}
    row = {**{k: result.get(k) for k in ROW_KEYS}, **{k: v for k, v in result.items() if k not in ROW_KEYS},
           **extra}
    row["config"] = config_identity(config) if config is not None else dict(row.get("config") or {})
    row["source"] = source if source is not None else row.get("source")
    return row
