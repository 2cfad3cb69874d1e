"""RAVDESS speech (audio-only): ``ROOT/Actor_01/03-01-05-01-02-01-01.wav``.

The file name holds everything, seven two-digit fields: modality (01 audio-video, 02 video-only,
03 audio-only), vocal channel (01 speech, 02 song), emotion, intensity (01 normal, 02 strong),
statement (01, 02), repetition (01, 02), actor (01..24; odd = male, even = female). Only speech audio
(modality 03, channel 01) is read; song files and other modalities in the folders are skipped with a
note, not reported as problems. ``ROOT`` may also be the folder that holds the ``Actor_*`` folders one
level down (``Audio_Speech_Actors_01-24/Actor_01/...``).

Classes (default: all eight, ids in the code order): 01 neutral, 02 calm, 03 happiness, 04 sadness,
05 anger, 06 fear, 07 disgust, 08 surprise. The release has 1440 speech files (60 per actor; 96
neutral, 192 of every other class). Options: ``labels`` (select and order classes) and ``label_map``
(merge, e.g. {"calm": "neutral"} for the 7-class setting), see :func:`._common.choose_classes`.

Speaker = ``actor01`` ... ``actor24`` (from the file name's actor field). Protocol: 6 folds of 4
consecutive actors (actor01-04, actor05-08, ...: two men and two women each), named after the test
actors joined by '+' (``actor01+actor02+actor03+actor04``); validation = the next fold's 4 actors,
cyclically; the other 16 train. A partial copy is cut into min(6, actors) such groups.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from serkd.data.corpora import register
from serkd.data.corpora._common import choose_classes, no_options, require_some, speaker_folds, with_durations
from serkd.data.manifest import Manifest, Utterance
from serkd.errors import BadInputError, SerkdError

EMOTIONS = {"01": "neutral", "02": "calm", "03": "happiness", "04": "sadness", "05": "anger", "06": "fear",
            "07": "disgust", "08": "surprise"}
LABELS = list(EMOTIONS.values())
NAME = re.compile(r"^(?P<modality>\d\d)-(?P<channel>\d\d)-(?P<emotion>\d\d)-(?P<intensity>\d\d)-(?P<statement>\d\d)"
                  r"-(?P<repetition>\d\d)-(?P<actor>\d\d)$")
ACTOR_DIR = re.compile(r"^Actor_(\d\d)$")
FOLDS = 6


def speaker(actor: str) -> str:
    return f"actor{actor}"


def parse_name(path: Path) -> dict[str, str]:
    """The seven fields of a RAVDESS file name; BadInputError naming the file otherwise."""
    match = NAME.match(path.stem)
    if not match:
        raise BadInputError(path, "not a RAVDESS file name (expected 7 two-digit fields: 03-01-05-01-02-01-01.wav)")
    fields = match.groupdict()
    if fields["emotion"] not in EMOTIONS:
        known = " ".join(f"{k}={v}" for k, v in EMOTIONS.items())
        raise BadInputError(path, f"unknown RAVDESS emotion code {fields['emotion']!r} (known: {known})")
    folder = ACTOR_DIR.match(path.parent.name)
    if folder and folder[1] != fields["actor"]:
        raise BadInputError(path, f"actor {fields['actor']} in the name but the file is in {path.parent.name}")
    return fields


def wav_files(root: Path) -> list[Path]:
    actors = [p for p in root.glob("Actor_*") if p.is_dir()] or [p for p in root.glob("*/Actor_*") if p.is_dir()]
    files = sorted(f for a in actors for f in a.iterdir() if f.suffix.lower() == ".wav" and not f.name.startswith("."))
    if not files:
        raise SerkdError(f"{root}: no RAVDESS wav files (expected {root}/Actor_01/03-01-01-01-01-01-01.wav ...)")
    return files


@register("ravdess")
def load(root: Path, labels: list[str] | None = None, label_map: dict[str, str] | None = None, **options) -> Manifest:
    no_options("ravdess", options, accepted=("labels", "label_map"))
    choice = choose_classes("ravdess", LABELS, LABELS, labels, label_map)
    root = Path(root)
    candidates, problems, skipped, left_out = [], [], Counter(), Counter()
    for path in wav_files(root):
        try:
            fields = parse_name(path)
        except BadInputError as problem:
            problems.append(problem)
            continue
        if fields["modality"] != "03" or fields["channel"] != "01":
            skipped["song" if fields["channel"] == "02" else f"modality {fields['modality']}"] += 1
            continue
        label = choice.of(EMOTIONS[fields["emotion"]])
        if label is None:
            left_out[EMOTIONS[fields["emotion"]]] += 1
            continue
        candidates.append(Utterance(path.stem, path, label, speaker(fields["actor"])))
    require_some(root, candidates, problems, "no RAVDESS speech file (modality 03, vocal channel 01) of the "
                                             f"selected classes {', '.join(choice.labels)}")
    utterances, unreadable = with_durations(candidates)
    notes = []
    if skipped:
        detail = ", ".join(f"{kind} {n}" for kind, n in sorted(skipped.items()))
        notes.append(f"skipped {sum(skipped.values())} RAVDESS file(s) that are not audio-only speech ({detail})")
    manifest = Manifest("ravdess", root, choice.labels, utterances, problems=problems + unreadable,
                        notes=notes + choice.left_out_note(left_out))
    # folds from every listed utterance, so a bad file does not change the protocol
    manifest.folds = speaker_folds(sorted({u.speaker for u in candidates}), FOLDS)
    return manifest
