"""The manifest: one row per utterance (id, path, label, speaker, duration, group) and the class list."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from serkd.data.audio import file_hash
from serkd.errors import BadInputError, SerkdError
from serkd.io import atomic_write_json, read_json


@dataclass(frozen=True)
class Utterance:
    utt_id: str
    path: Path
    label: str
    speaker: str
    duration: float | None = None  # seconds, from the header; None when unknown
    group: str | None = None  # a coarser unit than the speaker (IEMOCAP session, CSV fold)


class CorpusProblems(SerkdError):
    """Several bad inputs at once: one line per file, each naming the file and its problem."""

    def __init__(self, problems: list[BadInputError], hint: str = ""):
        self.problems = problems
        lines = [str(p) for p in problems]
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))


@dataclass
class Manifest:
    """A corpus as one table. ``labels`` fixes the class ids (index in the list)."""

    corpus: str
    root: Path
    labels: list[str]
    utterances: list[Utterance]
    folds: list = field(default_factory=list)  # serkd.data.protocol.Fold, the corpus' own protocol
    problems: list[BadInputError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def speakers(self) -> list[str]:
        return sorted({u.speaker for u in self.utterances})

    def label_ids(self) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.labels)}
        return np.array([index[u.label] for u in self.utterances], dtype=np.int64)

    def counts(self) -> dict[str, dict[str, int]]:
        by_label = Counter(u.label for u in self.utterances)
        by_speaker = Counter(u.speaker for u in self.utterances)
        return {
            "labels": {name: by_label.get(name, 0) for name in self.labels},
            "speakers": {s: by_speaker[s] for s in sorted(by_speaker)},
        }

    def subset(self, keep: Iterable[int]) -> Manifest:
        return replace(self, utterances=[self.utterances[i] for i in keep])

    def without(self, bad_paths: set[str]) -> Manifest:
        return replace(self, utterances=[u for u in self.utterances if str(u.path) not in bad_paths])

    def listed(self) -> int:
        """Files the corpus lists: the usable ones and those only its problems name."""
        return len(self.utterances) + len(problem_paths(self.problems) - {str(u.path) for u in self.utterances})

    def raise_problems(self, skip_bad: bool = False) -> Manifest:
        """Fail with every problem listed, or (``skip_bad``) drop the bad files and say how many."""
        if not self.problems:
            return self
        total = self.listed()
        if not skip_bad:
            raise CorpusProblems(self.problems, hint=skip_hint(self.problems, total))
        bad = problem_paths(self.problems)
        kept = self.without(bad)
        kept.notes = [*self.notes, f"skipped {len(bad)} bad input(s)"]
        kept.problems = []
        return kept

    def audio_hashes(self) -> dict[str, str]:
        return HashCache.default().hashes([u.path for u in self.utterances])

    def data_hash(self) -> str:
        """Identity of the data a result came from: ids, labels, speakers and audio bytes."""
        audio = self.audio_hashes()
        digest = hashlib.sha1(json.dumps(self.labels).encode())
        for u in sorted(self.utterances, key=lambda u: u.utt_id):
            digest.update(f"{u.utt_id}\t{u.label}\t{u.speaker}\t{audio[str(u.path)]}\n".encode())
        return digest.hexdigest()[:16]


class LabelProblem(BadInputError):
    """Rows whose label is not a class of the corpus: one problem per unknown label, naming its files' count."""

    def __init__(self, source: Path, label: str, paths: list[str], labels: list[str]):
        self.paths = set(paths)
        super().__init__(source, f"unknown label {label!r} on {len(paths)} row(s), e.g. {Path(paths[0]).name} "
                                 f"(known: {', '.join(labels)})")


def check_labels(rows: list[tuple[str, Path, str]], labels: list[str], source: Path) -> list[BadInputError]:
    """One problem per label that is not one of ``labels`` (rows: utt_id, path, label), with its row count."""
    known = set(labels)
    unknown: dict[str, list[str]] = {}
    for _, path, label in rows:
        if label not in known:
            unknown.setdefault(label, []).append(str(path))
    return [LabelProblem(source, label, paths, labels) for label, paths in unknown.items()]


def problem_paths(problems: list[BadInputError]) -> set[str]:
    """Every file the problems name (a label problem names all the rows of its label)."""
    return {path for p in problems for path in getattr(p, "paths", {p.path})}


def skip_hint(problems: list[BadInputError], total: int, where: str = "") -> str:
    """What ``--skip-bad`` would do, said so that dropping most of a corpus is not done by accident."""
    dropped = len(problem_paths(problems))
    share = len(problem_paths([p for p in problems if isinstance(p, LabelProblem)])) / max(total, 1)
    hint = f"{len(problems)} bad input(s){' in ' + where if where else ''} ({dropped} of {total} files)"
    if any(isinstance(p, LabelProblem) for p in problems):
        skip = f" (skip_bad would drop {share:.0%} of the corpus)" if share >= 0.2 else ", or skip_bad drops them"
        return hint + "; fix the labels option or the labels in the data" + skip
    return hint + "; skip_bad drops them"


def audio_duration(path: Path) -> tuple[float | None, BadInputError | None]:
    """Duration from the header; a missing, empty or undecodable file is a problem, not a crash."""
    import soundfile as sf

    if not path.is_file():
        return None, BadInputError(path, "audio file not found")
    if path.stat().st_size == 0:
        return None, BadInputError(path, "empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return None, BadInputError(path, f"cannot decode audio ({first})")
    if info.frames == 0:
        return None, BadInputError(path, "audio has no samples")
    return info.frames / info.samplerate, None


def write_manifest_csv(path: Path, utterances: list[Utterance], root: Path) -> None:
    from serkd.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["utt_id", "path", "label", "speaker", "duration"])
        for u in utterances:
            writer.writerow([u.utt_id, os.path.relpath(u.path, root), u.label, u.speaker, f"{u.duration:.4f}"])


class HashCache:
    """SHA-1 of audio files, remembered by (path, size, mtime) so a second run reads no audio to hash.

    Several processes may share one cache: new entries are merged into the file under a lock, never
    written over another process' entries.
    """

    def __init__(self, path: Path):
        self.path = path
        self._entries: dict[str, list] = self._read()

    def _read(self) -> dict[str, list]:
        if not self.path.is_file():
            return {}
        try:
            entries = read_json(self.path)
        except (OSError, ValueError):
            return {}  # a damaged cache is rebuilt, never trusted
        return entries if isinstance(entries, dict) else {}

    @classmethod
    def default(cls) -> HashCache:
        from serkd.data.cache import cache_root

        return cls(cache_root() / "audio_hashes.json")

    def hashes(self, paths: Iterable[Path]) -> dict[str, str]:
        out, new = {}, {}
        for path in paths:
            key = str(Path(path).resolve())
            stat = os.stat(path)
            entry = self._entries.get(key)
            if entry and entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns:
                out[str(path)] = entry[2]
                continue
            digest = file_hash(path)
            new[key] = self._entries[key] = [stat.st_size, stat.st_mtime_ns, digest]
            out[str(path)] = digest
        if new:
            from serkd.io import locked

            with locked(self.path.with_name(self.path.name + ".lock")):
                self._entries = {**self._read(), **new}
                atomic_write_json(self.path, self._entries)
        return out
