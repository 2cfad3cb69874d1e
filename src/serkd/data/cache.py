"""Where serkd keeps derived data (features, audio hashes): ``$SERKD_CACHE`` or ``~/.cache/serkd``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    root = Path(os.environ.get("SERKD_CACHE") or Path.home() / ".cache" / "serkd")
    root.mkdir(parents=True, exist_ok=True)
    return root
