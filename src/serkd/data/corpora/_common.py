"""Helpers shared by the corpus readers: header checks that collect problems, option checks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

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


def no_options(kind: str, options: dict) -> None:
    """Corpora with a fixed label set and protocol take no options: say so rather than ignore them."""
    given = sorted(k for k, v in options.items() if v is not None)
    if given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise SerkdError(f"{flags}: not an option of the {kind} corpus (its labels and folds are fixed)")
