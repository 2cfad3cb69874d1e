"""Where serkd keeps derived data (features, audio hashes): ``$SERKD_CACHE`` or ``~/.cache/serkd``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np


def cache_root() -> Path:
    root = Path(os.environ.get("SERKD_CACHE") or Path.home() / ".cache" / "serkd")
    root.mkdir(parents=True, exist_ok=True)
    return root


class NpyCache:
    """One ``.npy`` per audio hash under ``folder``; counts computed vs. reused entries.

    An entry is written to a temporary file and renamed, so parallel processes filling one cache
    never see half an array; a damaged or unexpected entry is recomputed, never trusted.
    """

    def __init__(self, folder: Path, valid: Callable[[np.ndarray], bool] | None = None):
        self.folder = folder
        self.valid = valid or (lambda _array: True)
        self.computed = 0
        self.reused = 0

    def get_or_compute(self, audio_hash: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        from serkd.io import atomic_path

        entry = self.folder / f"{audio_hash}.npy"
        if entry.is_file():
            try:
                values = np.load(entry, allow_pickle=False)
                if self.valid(values):
                    self.reused += 1
                    return values
            except (OSError, ValueError):
                pass
        values = compute()
        entry.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(entry, suffix=".npy") as tmp, open(tmp, "wb") as handle:
            np.save(handle, values, allow_pickle=False)
        self.computed += 1
        return values
