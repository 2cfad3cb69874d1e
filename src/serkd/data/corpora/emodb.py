"""Emo-DB (Berlin Database of Emotional Speech): ``ROOT/wav/03a01Fa.wav``, or the wav files directly in ROOT.

A file name holds everything: speaker ``03``, text ``a01``, emotion letter ``F``, version ``a``.
Labels (ids in this order, as in the seed): W anger, L boredom, E disgust, A fear, F happiness,
T sadness, N neutral. The real release has 535 utterances of 10 speakers.

Protocol (the seed's): 10 folds, each testing one speaker in the order 03 08 09 10 11 12 13 14 15 16,
fold names ``spk03`` ... (the test speaker) Validation speaker: the next speaker in that order, cyclically (fold spk03
validates on 08, ..., spk16 on 03), see :func:`serkd.data.protocol.leave_groups_out`; the other
8 speakers train.
"""

from __future__ import annotations

import re
from pathlib import Path

from serkd.data.corpora import register
from serkd.data.corpora._common import no_options, require_some, with_durations
from serkd.data.corpora._common import wav_files as common_wav_files
from serkd.data.manifest import Manifest, Utterance
from serkd.data.protocol import Fold, leave_groups_out
from serkd.errors import BadInputError

EMOTIONS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness",
            "N": "neutral"}
LABELS = list(EMOTIONS.values())
SPEAKER_ORDER = ("03", "08", "09", "10", "11", "12", "13", "14", "15", "16")
NAME = re.compile(r"^(?P<speaker>\d{2})(?P<text>[ab]\d{2})(?P<emotion>[A-Za-z])(?P<version>[a-z])$")


def parse_name(path: Path) -> tuple[str, str]:
    """(speaker, label) from an Emo-DB file name; BadInputError naming the file otherwise."""
    match = NAME.match(path.stem)
    if not match:
        raise BadInputError(path, "not an Emo-DB file name (expected speaker, text, emotion, version: 03a01Fa.wav)")
    letter = match["emotion"]
    if letter not in EMOTIONS:
        known = " ".join(f"{k}={v}" for k, v in EMOTIONS.items())
        raise BadInputError(path, f"unknown Emo-DB emotion letter {letter!r} (known: {known})")
    return match["speaker"], EMOTIONS[letter]


def wav_files(root: Path) -> list[Path]:
    return common_wav_files(root, "wav", "03a01Fa.wav", "Emo-DB")


def folds(speakers: list[str]) -> list[Fold]:
    """The seed's speaker order first; a speaker it does not know (not in the real release) goes last."""
    order = [s for s in SPEAKER_ORDER if s in speakers] + sorted(set(speakers) - set(SPEAKER_ORDER))
    return leave_groups_out([[s] for s in order])


@register("emodb")
def load(root: Path, **options) -> Manifest:
    no_options("emodb", options)
    root = Path(root)
    candidates, problems = [], []
    for path in wav_files(root):
        try:
            speaker, label = parse_name(path)
        except BadInputError as problem:
            problems.append(problem)
            continue
        candidates.append(Utterance(path.stem, path, label, speaker))
    require_some(root, candidates, problems, "no Emo-DB file name could be read")
    utterances, unreadable = with_durations(candidates)
    manifest = Manifest("emodb", root, list(LABELS), utterances, problems=problems + unreadable)
    manifest.folds = folds(sorted({u.speaker for u in candidates}))
    return manifest
