"""Decode every file of a corpus once and list its problems (corrupt, empty, silent, NaN)."""

from __future__ import annotations

from serkd.data.audio import load_audio
from serkd.data.manifest import Manifest
from serkd.errors import BadInputError


def audio_problems(manifest: Manifest) -> list[BadInputError]:
    problems = []
    for utt in manifest.utterances:
        try:
            load_audio(utt.path)
        except BadInputError as problem:
            problems.append(problem)
    return problems
