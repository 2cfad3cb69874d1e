"""Errors the CLI turns into one line on stderr (never a traceback)."""

from __future__ import annotations

from pathlib import Path


class SerkdError(Exception):
    """A user-facing problem: bad input, a refused operation, a missing file.

    The CLI prints ``serkd: error: <message>`` and exits with status 2.
    """


class BadInputError(SerkdError):
    """A problem with one input file: the message always names the file."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
