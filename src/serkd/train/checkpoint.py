"""Checkpoints are safetensors (weights) + JSON (everything needed to rebuild and trust the model).

Nothing is ever unpickled: weights come from safetensors, metadata from JSON.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from serkd import models
from serkd.errors import SerkdError
from serkd.io import atomic_write_json, atomic_write_with, read_json

WEIGHTS = "model.safetensors"
META = "checkpoint.json"


def save_checkpoint(folder: Path, model: torch.nn.Module, meta: dict) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_with(folder / WEIGHTS, lambda tmp: save_file(state, str(tmp)), suffix=".safetensors")
    atomic_write_json(folder / META, meta)


def load_checkpoint(folder: str | Path, map_location: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the student from ``checkpoint.json`` and load its safetensors weights (eval mode)."""
    folder = Path(folder)
    if not (folder / META).is_file() or not (folder / WEIGHTS).is_file():
        raise SerkdError(f"{folder}: not a checkpoint folder (needs {META} and {WEIGHTS})")
    meta = read_json(folder / META)
    model = models.create(meta["model"], num_classes=len(meta["labels"]), **meta.get("model_options", {}))
    model.load_state_dict(load_file(str(folder / WEIGHTS), device=map_location))
    model.eval()
    return model, meta
