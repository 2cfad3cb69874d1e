"""Any corpus described by a CSV: columns ``path,label,speaker`` (+ optional ``utt_id``, ``fold``).

Paths are relative to the CSV's folder. Labels are taken from the data (sorted) unless fixed by
``labels``; folds come from the ``fold`` column when present, else leave-``n``-speakers-out.
"""

from __future__ import annotations

import csv
from pathlib import Path

from serkd.data.manifest import Manifest, Utterance, audio_duration, check_labels
from serkd.data.protocol import leave_groups_out
from serkd.errors import BadInputError, SerkdError

REQUIRED = ("path", "label", "speaker")


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    try:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BadInputError(csv_path, f"cannot read CSV ({exc})") from None
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise BadInputError(csv_path, f"missing column(s) {', '.join(missing)} (have: {', '.join(columns)})")
    if not rows:
        raise BadInputError(csv_path, "no rows")
    return rows


def build(
    csv_path: Path,
    rows: list[dict[str, str]],
    corpus: str,
    labels: list[str] | None = None,
    speakers_per_fold: int = 1,
) -> Manifest:
    base = csv_path.parent
    labels = list(labels) if labels else sorted({r["label"] for r in rows})
    problems = check_labels([("", base / r["path"], r["label"]) for r in rows], labels, csv_path)
    bad_label_paths = {p.path for p in problems}
    utterances = []
    for row in rows:
        path = base / row["path"]
        if str(path) in bad_label_paths:
            continue
        duration, problem = audio_duration(path)
        if problem:
            problems.append(problem)
            continue
        utt_id = row.get("utt_id") or Path(row["path"]).with_suffix("").as_posix()
        utterances.append(Utterance(utt_id, path, row["label"], row["speaker"], duration, row.get("fold") or None))
    manifest = Manifest(corpus, base, labels, utterances, problems=problems)
    manifest.folds = default_folds(manifest, speakers_per_fold)
    return manifest


def default_folds(manifest: Manifest, speakers_per_fold: int = 1):
    if any(u.group for u in manifest.utterances):
        by_fold: dict[str, set[str]] = {}
        for u in manifest.utterances:
            by_fold.setdefault(u.group or "", set()).add(u.speaker)
        names = sorted(by_fold)
        return leave_groups_out([sorted(by_fold[n]) for n in names], names=[f"fold-{n}" for n in names])
    speakers = manifest.speakers
    if speakers_per_fold < 1:
        raise SerkdError("speakers per fold must be at least 1")
    groups = [speakers[i : i + speakers_per_fold] for i in range(0, len(speakers), speakers_per_fold)]
    return leave_groups_out(groups, names=["fold-" + "+".join(g) for g in groups])


def load(root: Path, labels: list[str] | None = None, speakers_per_fold: int = 1) -> Manifest:
    csv_path = Path(root)
    if csv_path.is_dir():
        raise SerkdError(f"{csv_path}: expected a CSV file with columns path,label,speaker")
    return build(csv_path, read_rows(csv_path), "csv", labels, speakers_per_fold)
