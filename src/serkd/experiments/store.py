"""The grid's results store: ``OUT/results.db``, an embedded SQLite database, one row per finished unit.

Only the driver process writes it (workers return their results): SQLite allows one writer at a time
and its locking is not for network filesystems, so the database stays on the driver's disk while the
run folders and the feature cache may sit on shared storage. WAL mode lets ``serkd report`` read
while a grid writes. Each row is committed in its own transaction: a driver killed at any point
loses at most the unit it was running, never a finished one, and never leaves a half row.

A row holds the unit's key (a hash of its resolved config, fold, seed and data hash), what it is
(kind, corpus, student, features, method, parameters, fold, seed), its status (``done``/``failed``
with the one-line reason), the scores, and the whole :class:`FoldResult` and config as JSON.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from serkd.errors import SerkdError
from serkd.experiments.units import KINDS, Outcome, Unit

SCHEMA = """
CREATE TABLE IF NOT EXISTS units (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,            -- teacher | student | trial
    status TEXT NOT NULL,          -- done | failed
    corpus TEXT, student TEXT, features TEXT, method TEXT, method_params TEXT,
    fold TEXT, seed INTEGER,
    wa REAL, ua REAL, valid_wa REAL, valid_ua REAL, best_epoch INTEGER,
    marks TEXT, result TEXT, config TEXT, config_hash TEXT, data_hash TEXT, code_version TEXT,
    error TEXT, seconds REAL, finished REAL
);
CREATE INDEX IF NOT EXISTS units_status ON units(status);
"""
COLUMNS = ("key", "name", "kind", "status", "corpus", "student", "features", "method", "method_params", "fold",
           "seed", "wa", "ua", "valid_wa", "valid_ua", "best_epoch", "marks", "result", "config", "config_hash",
           "data_hash", "code_version", "error", "seconds", "finished")


def connect(path: str | Path, readonly: bool = False) -> sqlite3.Connection:
    path = Path(path)
    if readonly:
        if not path.is_file():
            raise SerkdError(f"{path}: no results database")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
    conn.row_factory = sqlite3.Row
    return conn


class ResultsStore:
    """The driver's handle on ``results.db``: records units as they finish and answers the driver's questions
    (what is done, what failed and why, the scores of some units), so no caller writes SQL."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.conn = connect(self.path)
        except sqlite3.DatabaseError as exc:
            raise SerkdError(f"{self.path}: not a serkd results database ({exc})") from None

    def close(self) -> None:
        """Checkpoint and leave rollback-journal mode, so no ``-wal``/``-shm`` file stays beside the database
        (a reader opened later, read-only, would otherwise leave them); WAL is back on at the next open. With
        another connection still open (a ``serkd report`` reading), SQLite keeps WAL: nothing is lost."""
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.conn.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.OperationalError:
            pass  # a reader holds the database: it stays in WAL mode, consistent either way
        self.conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def status(self) -> dict[str, str]:
        """unit key -> status of every stored unit."""
        return {row["key"]: row["status"] for row in self.conn.execute("SELECT key, status FROM units")}

    def done_keys(self) -> set[str]:
        return {k for k, s in self.status().items() if s == "done"}

    def record(self, unit: Unit, outcome: Outcome) -> None:
        """One finished (or failed) unit, in its own transaction (replacing an earlier failure)."""
        result = outcome.result or {}
        config = unit.config
        row = {
            "key": unit.key, "name": unit.name, "kind": unit.kind, "status": outcome.status,
            "corpus": config.get("corpus"), "student": result.get("student") or config.get("student")
            or config.get("model"), "features": result.get("features") or config.get("features"),
            "method": result.get("method") or config.get("method", "teacher"),
            "method_params": json.dumps(config.get("method_params", {}), sort_keys=True), "fold": unit.fold,
            "seed": config.get("seed"), "wa": result.get("wa"), "ua": result.get("ua"),
            "valid_wa": result.get("valid_wa"), "valid_ua": result.get("valid_ua"),
            "best_epoch": result.get("best_epoch"), "marks": json.dumps(result.get("marks", [])),
            "result": json.dumps(result) if result else None, "config": json.dumps(config, sort_keys=True),
            "config_hash": result.get("config_hash"), "data_hash": unit.data_hash,
            "code_version": result.get("git_commit"), "error": outcome.error,
            "seconds": outcome.seconds, "finished": time.time(),
        }
        with self.conn:
            self.conn.execute(f"INSERT OR REPLACE INTO units ({', '.join(COLUMNS)}) VALUES "
                              f"({', '.join('?' for _ in COLUMNS)})", [row[c] for c in COLUMNS])

    def add_mark(self, key: str, mark: str) -> None:
        row = self.conn.execute("SELECT marks, result FROM units WHERE key = ?", (key,)).fetchone()
        if row is None:
            return
        marks = sorted(set(json.loads(row["marks"] or "[]")) | {mark})
        result = json.loads(row["result"]) if row["result"] else None
        if result is not None:
            result["marks"] = marks
        with self.conn:
            self.conn.execute("UPDATE units SET marks = ?, result = ? WHERE key = ?",
                              (json.dumps(marks), json.dumps(result) if result else None, key))

    def failures(self) -> list[dict]:
        """``{"key", "name", "fold", "error"}`` of every failed unit."""
        return [dict(r) for r in self.conn.execute("SELECT key, name, fold, error FROM units WHERE status = 'failed'")]

    def error_of(self, key: str) -> str | None:
        """Why a unit failed (None: it did not, or is not stored)."""
        row = self.conn.execute("SELECT error FROM units WHERE key = ? AND status = 'failed'", (key,)).fetchone()
        return None if row is None else row["error"] or "failed"

    def results(self, keys: Iterable[str]) -> list[dict]:
        """The FoldResult JSON of the finished units among ``keys``, in their order (missing ones left out)."""
        out = []
        for key in keys:
            row = self.conn.execute("SELECT result FROM units WHERE key = ? AND status = 'done'", (key,)).fetchone()
            if row is not None and row["result"]:
                out.append(json.loads(row["result"]))
        return out

    def finished(self, kinds: tuple[str, ...] = KINDS) -> list[dict]:
        """``{"key", "name", "kind", "fold", "seconds", "result"}`` of every finished unit of these kinds: what
        each unit cost its worker (``seconds``) beside what its training took (``result["train_seconds"]``)."""
        rows = self.conn.execute("SELECT key, name, kind, fold, seconds, result FROM units WHERE status = 'done' "
                                 "ORDER BY finished").fetchall()
        return [{**dict(r), "result": json.loads(r["result"])} for r in rows if r["kind"] in kinds and r["result"]]

    def counts(self, keys: Iterable[str] | None = None) -> dict[str, int]:
        """How many units are ``done`` and ``failed`` (of ``keys``, or of all)."""
        status = self.status()
        wanted = status if keys is None else {k: status[k] for k in keys if k in status}
        return {s: sum(v == s for v in wanted.values()) for s in ("done", "failed")}


def read_status(path: str | Path) -> dict[str, str]:
    """unit key -> status, read-only (a dry run beside a running grid); empty when there is no database yet."""
    if not Path(path).is_file():
        return {}
    try:
        conn = connect(path, readonly=True)
        try:
            return {row["key"]: row["status"] for row in conn.execute("SELECT key, status FROM units")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise SerkdError(f"{path}: not a serkd results database ({exc})") from None


def read_results(path: str | Path, kinds: tuple[str, ...] = ("student", "teacher")) -> list[dict]:
    """The finished units of a results database as FoldResult JSON rows (+ ``run``: the unit name, ``unit_key``,
    ``run_config``: the unit's config), opened read-only (a grid may be writing)."""
    try:
        conn = connect(path, readonly=True)
        try:
            rows = conn.execute("SELECT key, name, kind, result, config, config_hash FROM units WHERE status = 'done' "
                                "ORDER BY name, fold, seed").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise SerkdError(f"{path}: not a serkd results database ({exc})") from None
    out = []
    for row in rows:
        if row["kind"] not in kinds or not row["result"]:
            continue
        out.append({"run": row["name"], "unit_key": row["key"], **json.loads(row["result"]),
                    "config_hash": row["config_hash"], "run_config": json.loads(row["config"] or "null")})
    return out


def integrity(path: str | Path) -> str:
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
