"""IEMOCAP, 4 classes, from the official release layout.

Audio: ``ROOT/Session{1..5}/sentences/wav/<dialog>/<utterance>.wav``; labels:
``ROOT/Session{n}/dialog/EmoEvaluation/<dialog>.txt``, one line per utterance
``[start - end]<TAB>utterance<TAB>emotion<TAB>[v, a, d]`` (the annotators' lines below it are ignored).
Classes, ids as in the seed: ang -> anger 0, hap and exc -> happiness 1, sad -> sadness 2,
neu -> neutral 3; every other label (fru, sur, fea, dis, oth, xxx) is left out. The release has
5531 such utterances.

Speaker = session + the gender letter before the utterance number (``Ses01M_impro04_F000`` is
spoken by the female actor of session 1: ``Ses01F``); group = session folder (``Session1``).

Protocol: leave one session out, 5 folds named after their two test actors (``Ses01F+Ses01M`` ...;
``--folds Session1`` picks one by its session too). The validation set is the whole
next session, cyclically (Session1 validates on Session2, ..., Session5 on Session1), both of its
speakers: the test condition is an unseen *session* (two unseen actors, an unseen recording
session, and each actor's lapel microphone also picks up the partner), so validating on one actor
whose partner is in training would score more optimistically than the test and pick epochs for
the wrong condition. The price: three sessions train instead of the seed's four.
"""

from __future__ import annotations

import re
from pathlib import Path

from serkd.data.corpora import register
from serkd.data.corpora._common import no_options, require_some, with_durations
from serkd.data.manifest import Manifest, Utterance
from serkd.data.protocol import leave_groups_out
from serkd.errors import BadInputError, SerkdError

CLASSES = {"ang": "anger", "hap": "happiness", "exc": "happiness", "sad": "sadness", "neu": "neutral"}
LABELS = ["anger", "happiness", "sadness", "neutral"]
SESSION = re.compile(r"^Session(\d+)$")
LABEL_LINE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s+(?P<utt>\S+)\s+(?P<emotion>\S+)\s+\[")
UTTERANCE = re.compile(r"^(?P<session>Ses\d\d)[MF]_.+_(?P<gender>[MF])\d+$")


def sessions(root: Path) -> list[Path]:
    found = sorted((p for p in root.iterdir() if p.is_dir() and SESSION.match(p.name)),
                   key=lambda p: int(SESSION.match(p.name)[1]))
    if not found:
        raise SerkdError(f"{root}: no Session1..Session5 folders (expected the IEMOCAP release layout: "
                         f"{root}/Session1/sentences/wav/<dialog>/<utterance>.wav)")
    return found


def speaker_of(utterance: str) -> str | None:
    match = UTTERANCE.match(utterance)
    return match["session"] + match["gender"] if match else None


def label_lines(label_file: Path) -> list[tuple[str, str]]:
    """(utterance, emotion code) of every evaluation line of one EmoEvaluation file."""
    try:
        text = label_file.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise BadInputError(label_file, f"cannot read label file ({exc.strerror})") from None
    return [(m["utt"], m["emotion"]) for m in map(LABEL_LINE.match, text.splitlines()) if m]


def read_session(session: Path) -> tuple[list[Utterance], list[BadInputError]]:
    """The 4-class utterances labelled in one session's EmoEvaluation files (audio not checked yet)."""
    label_dir = session / "dialog" / "EmoEvaluation"
    if not label_dir.is_dir():
        return [], [BadInputError(label_dir, "IEMOCAP label folder not found")]
    utterances, problems, seen = [], [], set()
    # only the dialog files: the Categorical/Attribute/Self-evaluation subfolders hold per-annotator detail
    for label_file in sorted(p for p in label_dir.glob("*.txt") if not p.name.startswith(".")):
        try:
            lines = label_lines(label_file)
        except BadInputError as problem:
            problems.append(problem)
            continue
        for utt, code in lines:
            if code not in CLASSES or utt in seen:
                continue
            seen.add(utt)
            speaker = speaker_of(utt)
            if speaker is None:
                problems.append(BadInputError(label_file, f"cannot tell the speaker of utterance {utt!r}"))
                continue
            path = session / "sentences" / "wav" / utt.rsplit("_", 1)[0] / f"{utt}.wav"
            utterances.append(Utterance(utt, path, CLASSES[code], speaker, group=session.name))
    return utterances, problems


@register("iemocap")
def load(root: Path, **options) -> Manifest:
    no_options("iemocap", options)
    root = Path(root)
    candidates, problems = [], []
    for session in sessions(root):
        found, bad = read_session(session)
        candidates += found
        problems += bad
    require_some(root, candidates, problems, f"no utterance labelled {', '.join(CLASSES)} in the EmoEvaluation files")
    utterances, unreadable = with_durations(candidates)
    manifest = Manifest("iemocap", root, list(LABELS), utterances, problems=problems + unreadable)
    by_session: dict[str, set[str]] = {}
    for u in candidates:
        by_session.setdefault(u.group, set()).add(u.speaker)
    names = list(by_session)  # in session order
    manifest.folds = leave_groups_out([sorted(by_session[n]) for n in names], group_names=names)
    return manifest
