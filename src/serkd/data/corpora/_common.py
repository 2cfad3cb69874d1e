"""Helpers shared by the corpus readers: header checks that collect problems, option checks, class choice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from serkd.data.manifest import CorpusProblems, Utterance, audio_duration
from serkd.errors import BadInputError, SerkdError


def with_durations(candidates: Iterable[Utterance]) -> tuple[list[Utterance], list[BadInputError]]:
    """Each utterance with its duration from the header; a missing, empty or unreadable file becomes a problem.

    Only headers are read (fast even for IEMOCAP's 10k files); decoding every sample is
    ``serkd.data.quality.audio_problems``' job.
    """
    kept, problems = [], []
    for utt in candidates:
        duration, problem = audio_duration(utt.path)
        if problem:
            problems.append(problem)
        else:
            kept.append(replace(utt, duration=duration))
    return kept, problems


def require_some(root, candidates: list[Utterance], problems: list[BadInputError], what: str) -> None:
    """No utterance at all: list the problems that explain why, or say what was expected."""
    if candidates:
        return
    if problems:
        raise CorpusProblems(problems, hint=f"{root}: no usable utterance")
    raise SerkdError(f"{root}: {what}")


def no_options(kind: str, options: dict, accepted: Sequence[str] = ()) -> None:
    """Options a corpus does not take are refused, not ignored. ``options`` holds only the ones left
    over once the reader took its own (``accepted``, named in the message)."""
    given = sorted(k for k, v in options.items() if v is not None)
    if given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        why = f"it takes {', '.join(accepted)}" if accepted else "its labels and folds are fixed"
        raise SerkdError(f"{flags}: not an option of the {kind} corpus ({why})")


# The class names every reader uses, so that shared classes line up across corpora (cross-corpus
# evaluation, label maps): Emo-DB, IEMOCAP, RAVDESS, CREMA-D and MSP-Podcast all speak these.
SHARED_CLASSES = ("anger", "happiness", "sadness", "neutral", "fear", "disgust", "boredom", "calm", "surprise",
                  "contempt")


@dataclass(frozen=True)
class ClassChoice:
    """The classes a reader keeps (``labels``, in id order) and where each of the corpus' classes goes."""

    labels: list[str]
    mapping: dict[str, str]  # corpus class -> manifest class (after label_map)

    def of(self, corpus_class: str) -> str | None:
        """The manifest class of an utterance of ``corpus_class``; None when it is not selected."""
        target = self.mapping.get(corpus_class)
        return target if target in self.labels else None

    def left_out_note(self, left_out: Counter) -> list[str]:
        """One note counting the utterances of unselected classes, or none."""
        if not left_out:
            return []
        detail = ", ".join(f"{name} {n}" for name, n in sorted(left_out.items()))
        return [f"left out {sum(left_out.values())} utterance(s) of classes not selected ({detail})"]


def choose_classes(
    kind: str,
    known: Sequence[str],
    default: Sequence[str],
    labels: Sequence[str] | str | None = None,
    label_map: Mapping[str, str] | Iterable[str] | None = None,
) -> ClassChoice:
    """The ``labels`` / ``label_map`` options of a corpus, checked against its classes.

    ``label_map`` ({"calm": "neutral"}, or ["calm=neutral"]) renames or merges classes: its keys must
    be classes of the corpus (``known``), its targets a class of the corpus or a shared class name.
    ``labels`` then selects classes after the map, in the order that fixes their ids; without it the
    corpus' ``default`` classes (mapped, first occurrence kept) are used. Utterances of other classes
    are left out. Unknown names are one SerkdError naming the corpus and listing the known classes.
    """
    mapping = {c: c for c in known}
    for source, target in _pairs(kind, label_map):
        if source not in mapping:
            raise SerkdError(f"{kind}: unknown class {source!r} in label_map (known: {', '.join(known)})")
        if target not in known and target not in SHARED_CLASSES:
            allowed = list(known) + [c for c in SHARED_CLASSES if c not in known]
            raise SerkdError(f"{kind}: label_map maps {source!r} to unknown class {target!r} "
                             f"(known: {', '.join(allowed)})")
        mapping[source] = target
    available = list(dict.fromkeys(mapping.values()))
    if labels is None or len(labels) == 0:
        chosen = list(dict.fromkeys(mapping[c] for c in default))
    else:
        chosen = [s.strip() for s in labels.split(",")] if isinstance(labels, str) else list(labels)
        unknown = [c for c in chosen if c not in available]
        if unknown:
            raise SerkdError(f"{kind}: unknown class {unknown[0]!r} in labels (known: {', '.join(available)})")
        twice = [c for c, n in Counter(chosen).items() if n > 1]
        if twice:
            raise SerkdError(f"{kind}: labels lists class {twice[0]!r} twice: {', '.join(chosen)}")
    return ClassChoice(chosen, mapping)


def _pairs(kind: str, label_map: Mapping[str, str] | Iterable[str] | None) -> list[tuple[str, str]]:
    if not label_map:
        return []
    if isinstance(label_map, Mapping):
        return [(str(k).strip(), str(v).strip()) for k, v in label_map.items()]
    pairs = []
    for item in [label_map] if isinstance(label_map, str) else label_map:
        for entry in (e.strip() for e in str(item).split(",") if e.strip()):
            source, sep, target = entry.partition("=")
            if not sep or not source.strip() or not target.strip():
                raise SerkdError(f"{kind}: label_map entry {entry!r} is not class=class")
            pairs.append((source.strip(), target.strip()))
    return pairs


def consecutive_groups(speakers: Sequence[str], n: int) -> list[list[str]]:
    """``speakers`` in their order, cut into ``min(n, len(speakers))`` consecutive groups whose sizes
    differ by at most one (the larger ones first)."""
    n = min(n, len(speakers))
    size, extra = divmod(len(speakers), n) if n else (0, 0)
    groups, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        groups.append(list(speakers[start:end]))
        start = end
    return groups


def speaker_folds(speakers: Sequence[str], n: int) -> list:
    """Leave-a-group-out folds over consecutive speaker groups; validation = the next group (cyclic).

    Fold names are the test speakers joined by '+' (``actor01+actor02``)."""
    from serkd.data.protocol import leave_groups_out

    groups = consecutive_groups(speakers, n)
    return leave_groups_out(groups)


def wav_files(root: Path, subfolder: str, example: str, corpus: str) -> list[Path]:
    """The .wav files of ``root/subfolder`` (or of ``root`` itself), sorted; one line when there are none."""
    folder = root / subfolder if (root / subfolder).is_dir() else root
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".wav" and not p.name.startswith("."))
    if not files:
        raise SerkdError(f"{root}: no {corpus} wav files (expected {root}/{subfolder}/{example} ... or "
                         f"{root}/{example} ...)")
    return files
