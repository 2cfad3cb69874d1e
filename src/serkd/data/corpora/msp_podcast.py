"""MSP-Podcast: labels in ``ROOT/Labels/labels_consensus.csv``, audio in ``ROOT/Audios/<FileName>``.

The CSV has one row per utterance with (among others) the columns ``FileName``, ``EmoClass`` (the
consensus category: A angry, S sad, H happy, U surprise, F fear, D disgust, C contempt, N neutral,
O other, X no agreement), ``SpkrID`` (a number, or ``Unknown``) and ``Split_Set`` (Train,
Development, Test1, Test2, ...). O and X name no emotion and are always left out (counted in a note).

Classes: default the common 4-class setting, ids as IEMOCAP's: anger, happiness, sadness, neutral
(A, H, S, N). ``labels`` selects others among anger, sadness, happiness, surprise, fear, disgust,
contempt, neutral (all eight: the consensus categories); ``label_map`` merges, see
:func:`._common.choose_classes`.

Protocol: the official split as ONE fold, named after its test set: train = Train, validation =
Development, test = Test1 (``test_set="Test2"`` picks another test set of the CSV). Utterances of the
other splits are left out of the manifest (counted in a note). The split, not speaker ids, is what
makes this corpus speaker-independent: many utterances have no known speaker, so speaker
``Unknown`` becomes one pseudo-speaker per split (``unknown-train``, ``unknown-development``,
``unknown-test1``) and never links two splits; a known speaker is its SpkrID (``127``). Should a
known speaker appear in two splits, its id is suffixed with the split (``127@Train``) so that the
official split still holds, and a note says so.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from serkd.data.corpora import register
from serkd.data.corpora._common import choose_classes, no_options, require_some, with_durations
from serkd.data.corpora.csv_corpus import read_rows
from serkd.data.manifest import Manifest, Utterance
from serkd.data.protocol import Fold
from serkd.errors import BadInputError, SerkdError

EMOTIONS = {"A": "anger", "S": "sadness", "H": "happiness", "U": "surprise", "F": "fear", "D": "disgust",
            "C": "contempt", "N": "neutral"}
NO_CLASS = {"O": "other", "X": "no agreement"}
DEFAULT = ["anger", "happiness", "sadness", "neutral"]
LABELS_CSV = Path("Labels") / "labels_consensus.csv"
REQUIRED = ("FileName", "EmoClass", "SpkrID", "Split_Set")
TRAIN, VALID = "Train", "Development"


def read_labels(csv_path: Path) -> list[dict[str, str]]:
    if not csv_path.is_file():
        raise SerkdError(f"{csv_path}: MSP-Podcast labels not found (expected ROOT/{LABELS_CSV.as_posix()})")
    return read_rows(csv_path, REQUIRED)


def split_names(rows: list[dict[str, str]], test_set: str, csv_path: Path) -> tuple[str, str, str]:
    present = sorted({r["Split_Set"] for r in rows if r["Split_Set"]})
    tests = [s for s in present if s not in (TRAIN, VALID)]
    if test_set not in tests:
        raise SerkdError(f"msp-podcast: test_set {test_set!r} is not a test split of {csv_path} "
                         f"(its test splits: {', '.join(tests) or 'none'})")
    return TRAIN, VALID, test_set


def speaker_ids(rows: list[tuple[dict[str, str], str]]) -> tuple[dict[int, str], list[str]]:
    """Speaker of each row (by index), and a note when a known speaker spans splits."""
    splits_of: dict[str, set[str]] = {}
    for row, split in rows:
        if not _unknown(row["SpkrID"]):
            splits_of.setdefault(row["SpkrID"], set()).add(split)
    crossing = {s for s, splits in splits_of.items() if len(splits) > 1}
    speakers = {}
    for i, (row, split) in enumerate(rows):
        spk = row["SpkrID"]
        if _unknown(spk):
            speakers[i] = f"unknown-{split.lower()}"
        else:
            speakers[i] = f"{spk}@{split}" if spk in crossing else spk
    notes = [f"{len(crossing)} MSP-Podcast speaker(s) appear in two splits ({', '.join(sorted(crossing)[:5])}"
             f"{' ...' if len(crossing) > 5 else ''}): their ids carry the split (127@Train), the official split "
             "stays as it is"] if crossing else []
    return speakers, notes


def _unknown(speaker: str) -> bool:
    return not speaker or speaker.lower() == "unknown"


@register("msp-podcast")
def load(root: Path, labels: list[str] | None = None, label_map: dict[str, str] | None = None,
         test_set: str | None = None, **options) -> Manifest:
    no_options("msp-podcast", options, accepted=("labels", "label_map", "test_set"))
    choice = choose_classes("msp-podcast", list(EMOTIONS.values()), DEFAULT, labels, label_map)
    root = Path(root)
    csv_path = root / LABELS_CSV
    rows = read_labels(csv_path)
    splits = split_names(rows, test_set or "Test1", csv_path)
    problems, kept, seen = [], [], {}
    left_out, other_splits = Counter(), Counter()
    for i, row in enumerate(rows):
        line = i + 2  # the header is line 1
        empty = [c for c in ("FileName", "EmoClass", "Split_Set") if not row[c]]
        if empty:
            problems.append(BadInputError(csv_path, f"line {line}: empty {', '.join(empty)}"))
            continue
        if row["FileName"] in seen:
            again = f"line {line}: {row['FileName']} repeats line {seen[row['FileName']]}"
            problems.append(BadInputError(csv_path, again))
            continue
        seen[row["FileName"]] = line
        code = row["EmoClass"]
        if code not in EMOTIONS and code not in NO_CLASS:
            known = " ".join(f"{k}={v}" for k, v in {**EMOTIONS, **NO_CLASS}.items())
            problems.append(BadInputError(csv_path, f"line {line}: unknown EmoClass {code!r} (known: {known})"))
            continue
        if row["Split_Set"] not in splits:
            other_splits[row["Split_Set"]] += 1
            continue
        if code in NO_CLASS:
            left_out[NO_CLASS[code]] += 1
            continue
        label = choice.of(EMOTIONS[code])
        if label is None:
            left_out[EMOTIONS[code]] += 1
            continue
        kept.append((row, label))
    speakers, notes = speaker_ids([(row, row["Split_Set"]) for row, _ in kept])
    candidates = [Utterance(Path(row["FileName"]).stem, root / "Audios" / row["FileName"], label, speakers[i],
                            group=row["Split_Set"]) for i, (row, label) in enumerate(kept)]
    require_some(csv_path, candidates, problems, f"no utterance of the selected classes {', '.join(choice.labels)} "
                                                 f"in splits {', '.join(splits)}")
    utterances, unreadable = with_durations(candidates)
    if other_splits:
        detail = ", ".join(f"{s} {n}" for s, n in sorted(other_splits.items()))
        notes.append(f"left out {sum(other_splits.values())} utterance(s) of other splits ({detail})")
    manifest = Manifest("msp-podcast", root, choice.labels, utterances, problems=problems + unreadable,
                        notes=notes + choice.left_out_note(left_out))
    manifest.folds = [official_fold(candidates, splits, csv_path)]
    return manifest


def official_fold(utterances: list[Utterance], splits: tuple[str, str, str], csv_path: Path) -> Fold:
    """One fold: train = Train, valid = Development, test = the chosen test set (speakers of each)."""
    by_split: dict[str, set[str]] = {s: set() for s in splits}
    for u in utterances:
        by_split[u.group].add(u.speaker)
    for split, members in by_split.items():
        if not members:
            raise SerkdError(f"{csv_path}: no usable utterance in Split_Set {split} (the official fold needs "
                             f"{', '.join(splits)})")
    train, valid, test = (tuple(sorted(by_split[s], key=_speaker_order)) for s in splits)
    return Fold(splits[2], test=test, valid=valid, train=train)


def _speaker_order(speaker: str) -> tuple[int, int, str]:
    head = speaker.split("@")[0]
    return (0, int(head), speaker) if head.isdigit() else (1, 0, speaker)
