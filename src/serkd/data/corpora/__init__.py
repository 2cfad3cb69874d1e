"""Corpus readers, found by name in one registry.

Adding a corpus = one module in this folder with a decorated reader, nothing else::

    from serkd.data.corpora import register

    @register("mycorpus")
    def load(root: Path, **options) -> Manifest: ...

``options`` are the corpus' own (``labels``, ``speakers_per_fold`` ...); a reader that takes none
says so with ``_common.no_options``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from serkd.data.manifest import Manifest
from serkd.errors import SerkdError
from serkd.registry import Registry, import_submodules

READERS: Registry[Callable[..., Manifest]] = Registry("corpus kind")
register = READERS.register


def available() -> list[str]:
    return READERS.available()


def reader(kind: str) -> Callable[..., Manifest]:
    try:
        return READERS.get(kind)
    except ValueError as exc:
        raise SerkdError(str(exc)) from None


def load_corpus(kind: str, root: str | Path, **options) -> Manifest:
    """Read a corpus; bad files are collected in ``manifest.problems`` (see Manifest.raise_problems)."""
    read = reader(kind)
    root = Path(root)
    if not root.exists():
        raise SerkdError(f"{root}: corpus root not found")
    return read(root, **options)


import_submodules(__name__, __path__)
