"""CREMA-D: ``ROOT/AudioWAV/1001_DFA_ANG_XX.wav``, or the wav files directly in ROOT.

The file name holds everything: actor ``1001`` (91 actors, 1001..1091), sentence (one of 12
codes: IEO TIE IOM IWW TAI MTI IWL ITH DFA ITS TSI WSI), emotion, level (LO, MD, HI, or XX
unspecified). Classes (default: all six, ids in this order): ANG anger, DIS disgust, FEA fear,
HAP happiness, NEU neutral, SAD sadness. The release has 7442 clips. Options: ``labels`` and
``label_map``, see :func:`._common.choose_classes`.

Speaker = the actor id as in the release (``1001``). Protocol: 10 folds of consecutive actor ids
(the 91 actors: one fold of 10, nine of 9: 1001-1010, 1011-1019, ...), named after the test actors
joined by '+' (``spk1001+spk1002+...+spk1010``: digit-only ids get the prefix spk); validation = the
next fold's actors, cyclically; the other 8 folds train. A partial copy is cut into min(10, actors) such groups.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from serkd.data.corpora import register
from serkd.data.corpora._common import choose_classes, no_options, require_some, speaker_folds, with_durations
from serkd.data.corpora._common import wav_files as common_wav_files
from serkd.data.manifest import Manifest, Utterance
from serkd.errors import BadInputError

EMOTIONS = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happiness", "NEU": "neutral", "SAD": "sadness"}
LABELS = list(EMOTIONS.values())
SENTENCES = frozenset({"IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI"})
LEVELS = frozenset({"LO", "MD", "HI", "XX"})
NAME = re.compile(r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{2})$")
FOLDS = 10


def parse_name(path: Path) -> tuple[str, str]:
    """(actor, corpus class) from a CREMA-D file name; BadInputError naming the file otherwise."""
    match = NAME.match(path.stem)
    if not match:
        expected = "expected actor_sentence_emotion_level: 1001_DFA_ANG_XX.wav"
        raise BadInputError(path, f"not a CREMA-D file name ({expected})")
    if match["emotion"] not in EMOTIONS:
        known = " ".join(f"{k}={v}" for k, v in EMOTIONS.items())
        raise BadInputError(path, f"unknown CREMA-D emotion code {match['emotion']!r} (known: {known})")
    if match["sentence"] not in SENTENCES:
        raise BadInputError(path, f"unknown CREMA-D sentence code {match['sentence']!r}")
    if match["level"] not in LEVELS:
        raise BadInputError(path, f"unknown CREMA-D level {match['level']!r} (known: LO MD HI XX)")
    return match["actor"], EMOTIONS[match["emotion"]]


def wav_files(root: Path) -> list[Path]:
    return common_wav_files(root, "AudioWAV", "1001_DFA_ANG_XX.wav", "CREMA-D")


@register("cremad")
def load(root: Path, labels: list[str] | None = None, label_map: dict[str, str] | None = None, **options) -> Manifest:
    no_options("cremad", options, accepted=("labels", "label_map"))
    choice = choose_classes("cremad", LABELS, LABELS, labels, label_map)
    root = Path(root)
    candidates, problems, left_out = [], [], Counter()
    for path in wav_files(root):
        try:
            actor, emotion = parse_name(path)
        except BadInputError as problem:
            problems.append(problem)
            continue
        label = choice.of(emotion)
        if label is None:
            left_out[emotion] += 1
            continue
        candidates.append(Utterance(path.stem, path, label, actor))
    require_some(root, candidates, problems, f"no CREMA-D file of the selected classes {', '.join(choice.labels)}")
    utterances, unreadable = with_durations(candidates)
    manifest = Manifest("cremad", root, choice.labels, utterances, problems=problems + unreadable,
                        notes=choice.left_out_note(left_out))
    manifest.folds = speaker_folds(sorted({u.speaker for u in candidates}), FOLDS)
    return manifest
