"""Corpus readers, found by name. Adding a corpus = one module with ``load(root, **options)`` + one line."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from pathlib import Path

from serkd.data.manifest import Manifest
from serkd.errors import SerkdError

# name -> module providing load(root: Path, **options) -> Manifest
_READERS: dict[str, str] = {
    "synth": "serkd.data.corpora.synth",
    "csv": "serkd.data.corpora.csv_corpus",
    "emodb": "serkd.data.corpora.emodb",
    "iemocap": "serkd.data.corpora.iemocap",
}


def available() -> list[str]:
    return sorted(_READERS)


def reader(kind: str) -> Callable[..., Manifest]:
    if kind not in _READERS:
        raise SerkdError(f"unknown corpus kind {kind!r} (available: {', '.join(available())})")
    return import_module(_READERS[kind]).load


def load_corpus(kind: str, root: str | Path, **options) -> Manifest:
    """Read a corpus; bad files are collected in ``manifest.problems`` (see Manifest.raise_problems)."""
    root = Path(root)
    if not root.exists():
        raise SerkdError(f"{root}: corpus root not found")
    return reader(kind)(root, **options)
