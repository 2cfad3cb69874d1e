"""What every run records: the code version (git commit), library versions, host and time."""

from __future__ import annotations

import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import serkd

LIBRARIES = ("torch", "numpy", "librosa", "timm", "scikit-learn", "transformers", "safetensors")


def git_commit() -> str:
    """The commit of the serkd source tree, with ``-dirty`` when it has uncommitted changes."""
    source = Path(serkd.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=source, capture_output=True, text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "serkd": serkd.__version__}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def provenance() -> dict:
    return {
        "git_commit": git_commit(),
        "versions": library_versions(),
        "host": platform.node(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
