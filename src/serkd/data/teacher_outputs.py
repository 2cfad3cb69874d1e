"""The teacher outputs store: per fold, the teacher's logits (and optional embeddings) per utterance.

Layout: ``DIR/<fold name>/outputs.safetensors`` (``logits`` [N, C], optional ``embeddings`` [N, D])
and ``DIR/<fold name>/outputs.json``: utterance ids in row order, labels, teacher name, provenance
(``trained`` or ``seed-shipped``), fold, the speakers it trained on, data hash, whether it is
fold-clean, and (trained teachers) a config hash: same config + same data hash = reuse, not retrain.
A student may only use a fold whose teacher never trained on that fold's test speakers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from serkd.errors import SerkdError
from serkd.io import atomic_write_json, atomic_write_with, read_json

OUTPUTS = "outputs.safetensors"
META = "outputs.json"


@dataclass
class TeacherOutputs:
    utt_ids: list[str]
    logits: np.ndarray  # (N, C) float32
    meta: dict
    embeddings: np.ndarray | None = None

    def aligned(self, utt_ids: list[str], fold_dir: Path) -> np.ndarray:
        """Logits in the order of ``utt_ids``; a missing utterance is a one-line error naming it."""
        index = {u: i for i, u in enumerate(self.utt_ids)}
        missing = [u for u in utt_ids if u not in index]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise SerkdError(f"{fold_dir}: no teacher output for utterance {missing[0]!r}{more}")
        return self.logits[[index[u] for u in utt_ids]]


def write_fold(store: Path, fold_name: str, utt_ids: list[str], logits, meta: dict, embeddings=None) -> Path:
    folder = Path(store) / fold_name
    tensors = {"logits": torch.as_tensor(np.asarray(logits, dtype=np.float32)).contiguous()}
    if embeddings is not None:
        tensors["embeddings"] = torch.as_tensor(np.asarray(embeddings, dtype=np.float32)).contiguous()
    if len(utt_ids) != tensors["logits"].shape[0]:
        raise ValueError("one logit row per utterance id")
    atomic_write_with(folder / OUTPUTS, lambda tmp: save_file(tensors, str(tmp)), suffix=".safetensors")
    atomic_write_json(folder / META, {**meta, "fold": fold_name, "utt_ids": list(utt_ids)})
    return folder


def read_fold(store: Path, fold_name: str) -> TeacherOutputs:
    folder = Path(store) / fold_name
    if not (folder / META).is_file() or not (folder / OUTPUTS).is_file():
        have = sorted(p.name for p in Path(store).iterdir() if (p / META).is_file()) if Path(store).is_dir() else []
        raise SerkdError(
            f"{folder}: missing teacher outputs for fold {fold_name!r} (store has: {', '.join(have) or 'nothing'})"
        )
    meta = read_json(folder / META)
    tensors = load_file(str(folder / OUTPUTS))
    embeddings = tensors.get("embeddings")
    return TeacherOutputs(
        meta.pop("utt_ids"),
        tensors["logits"].numpy(),
        meta,
        None if embeddings is None else embeddings.numpy(),
    )


def read_meta(store: Path, fold_name: str) -> dict:
    """A fold's metadata only (no tensors): enough to check a teacher before any feature is computed."""
    folder = Path(store) / fold_name
    if not (folder / META).is_file() or not (folder / OUTPUTS).is_file():
        have = folds_in(store) if Path(store).is_dir() else []
        raise SerkdError(
            f"{folder}: missing teacher outputs for fold {fold_name!r} (store has: {', '.join(have) or 'nothing'})"
        )
    try:
        meta = read_json(folder / META)
    except (OSError, ValueError) as exc:
        raise SerkdError(f"{folder / META}: unreadable teacher metadata ({exc})") from None
    meta.pop("utt_ids", None)
    return meta


def config_hash(config: dict) -> str:
    """Identity of what produced a fold's outputs (model, version, hyper-parameters, fold speakers)."""
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached(store: Path, fold_name: str, config_key: str, data_hash: str) -> dict | None:
    """The fold's metadata when its outputs came from the same config and data, else None (retrain)."""
    folder = Path(store) / fold_name
    if not (folder / META).is_file() or not (folder / OUTPUTS).is_file():
        return None
    try:
        meta = read_json(folder / META)
    except (OSError, ValueError):
        return None  # damaged metadata is recomputed, never trusted
    same = meta.get("config_hash") == config_key and meta.get("data_hash") == data_hash
    return meta if same else None


def folds_in(store: Path) -> list[str]:
    return sorted(p.name for p in Path(store).iterdir() if (p / META).is_file())


def leak(outputs: TeacherOutputs, test_speakers) -> list[str]:
    """Test speakers this teacher saw in training; a teacher that is not fold-clean leaks everything."""
    return leak_meta(outputs.meta, test_speakers)


def leak_meta(meta: dict, test_speakers) -> list[str]:
    if not meta.get("fold_clean", True):
        return sorted(test_speakers)
    return sorted(set(meta.get("train_speakers", [])) & set(test_speakers))


def recorded_corpus(store: Path) -> dict | None:
    """``{"corpus", "root", "corpus_options"}`` as the store recorded them (teacher eval needs no flags)."""
    for name in folds_in(store) if Path(store).is_dir() else []:
        meta = read_meta(store, name)
        if meta.get("corpus") and meta.get("root"):
            return {"corpus": meta["corpus"], "root": meta["root"], "corpus_options": meta.get("corpus_options", {})}
    return None
