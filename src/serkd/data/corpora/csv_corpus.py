"""Any corpus described by a CSV: columns ``path,label,speaker`` (+ optional ``utt_id``, ``fold``).

Paths are relative to the CSV's folder. Labels are taken from the data (sorted) unless fixed by
``labels``; folds come from the ``fold`` column when present, else leave-``n``-speakers-out.
"""

from __future__ import annotations

import csv
from pathlib import Path

from serkd.data.corpora import register
from serkd.data.corpora._common import require_some, with_durations
from serkd.data.manifest import Manifest, Utterance, check_labels
from serkd.data.protocol import Fold, leave_groups_out
from serkd.errors import BadInputError, SerkdError

REQUIRED = ("path", "label", "speaker")


def read_rows(csv_path: Path, required: tuple[str, ...] = REQUIRED) -> list[dict[str, str]]:
    """The rows of a CSV, values stripped; BadInputError for an unreadable file, missing columns, no rows."""
    try:
        # utf-8-sig: spreadsheets often save a byte-order mark that would otherwise rename the first column
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
            columns = [c.strip() for c in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BadInputError(csv_path, f"cannot read CSV ({exc})") from None
    missing = [c for c in required if c not in columns]
    if missing:
        raise BadInputError(csv_path, f"missing column(s) {', '.join(missing)} (have: {', '.join(columns)})")
    if not rows:
        raise BadInputError(csv_path, "no rows")
    return rows


def row_problems(csv_path: Path, rows: list[dict[str, str]]) -> tuple[list[int], list[BadInputError]]:
    """Indices of usable rows, and a problem for each row with an empty field or a repeated utterance id."""
    good, problems, first_row = [], [], {}
    has_fold = any(r.get("fold") for r in rows)
    for i, row in enumerate(rows):
        line = i + 2  # the header is line 1
        empty = [c for c in (*REQUIRED, *(("fold",) if has_fold else ())) if not row.get(c)]
        if empty:
            problems.append(BadInputError(csv_path, f"line {line}: empty {', '.join(empty)}"))
            continue
        utt_id = utterance_id(row)
        if utt_id in first_row:
            again = f"line {line}: utterance {utt_id!r} repeats line {first_row[utt_id]}"
            problems.append(BadInputError(csv_path, again))
            continue
        first_row[utt_id] = line
        good.append(i)
    return good, problems


def utterance_id(row: dict[str, str]) -> str:
    return row.get("utt_id") or Path(row["path"]).with_suffix("").as_posix()


def build(
    csv_path: Path,
    rows: list[dict[str, str]],
    corpus: str,
    labels: list[str] | None = None,
    speakers_per_fold: int = 1,
) -> Manifest:
    base = csv_path.parent
    good, problems = row_problems(csv_path, rows)
    rows = [rows[i] for i in good]
    if labels and len(set(labels)) != len(labels):
        raise SerkdError(f"--labels lists a class twice: {', '.join(labels)}")
    labels = list(labels) if labels else sorted({r["label"] for r in rows})
    known = set(labels)
    problems += check_labels([("", base / r["path"], r["label"]) for r in rows], labels, csv_path)
    candidates = [Utterance(utterance_id(r), base / r["path"], r["label"], r["speaker"], group=r.get("fold") or None)
                  for r in rows if r["label"] in known]
    require_some(csv_path, candidates, problems, "no usable row")
    utterances, unreadable = with_durations(candidates)
    manifest = Manifest(corpus, base, labels, utterances, problems=problems + unreadable)
    # folds from every listed utterance, so a bad file does not change the protocol
    manifest.folds = default_folds(candidates, speakers_per_fold, csv_path)
    return manifest


def default_folds(utterances: list[Utterance], speakers_per_fold: int = 1, source: Path | None = None) -> list[Fold]:
    """Folds from the ``fold`` column (test = that fold's speakers, valid = the next fold's), else
    leave-``speakers_per_fold``-speakers-out over the sorted speakers (valid = the next group)."""
    if any(u.group for u in utterances):
        by_fold: dict[str, set[str]] = {}
        fold_of: dict[str, str] = {}
        for u in utterances:
            if fold_of.setdefault(u.speaker, u.group) != u.group:
                where = f"speaker {u.speaker!r} is in folds {fold_of[u.speaker]!r} and {u.group!r}"
                raise BadInputError(source or u.path, f"{where}: speaker-independent folds need one fold per speaker")
            by_fold.setdefault(u.group, set()).add(u.speaker)
        names = sorted(by_fold)
        return leave_groups_out([sorted(by_fold[n]) for n in names], group_names=names)
    speakers = sorted({u.speaker for u in utterances})
    if speakers_per_fold < 1:
        raise SerkdError("speakers per fold must be at least 1")
    groups = [speakers[i : i + speakers_per_fold] for i in range(0, len(speakers), speakers_per_fold)]
    return leave_groups_out(groups)


@register("csv")
def load(root: Path, labels: list[str] | None = None, speakers_per_fold: int = 1) -> Manifest:
    csv_path = Path(root)
    if csv_path.is_dir():
        raise SerkdError(f"{csv_path}: expected a CSV file with columns path,label,speaker")
    return build(csv_path, read_rows(csv_path), "csv", labels, speakers_per_fold)
