"""The teacher outputs store: per fold, the teacher's logits (and optional embeddings) per utterance.

Layout: ``DIR/<fold name>/outputs.safetensors`` (``logits`` [N, C]; optional ``embeddings``, either
[N, D] one vector per utterance or [N, L, D] one per layer (WavLM: the masked frame mean of every
hidden state, float16 allowed); optional ``pooled`` [N, D], the classifier's input of a layered
teacher) and ``DIR/<fold name>/outputs.json``: utterance ids in row order, labels, teacher name, provenance
(``trained`` or ``seed-shipped``), fold, the speakers it trained on, data hash, whether it is
fold-clean, and (trained teachers) a config hash: same config + same data hash = reuse, not retrain.
A student may only use a fold whose teacher never trained on that fold's test speakers.

Feature-based KD picks one [N, D] matrix from a store with :func:`embedding_matrix`: a layer, the
weighted sum with the teacher's learned layer weights (meta ``layer_weights``, before the softmax),
or the pooled vector. Layered stores also carry meta ``embedding_layers`` (L).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from serkd.errors import SerkdError
from serkd.hashing import stable_hash
from serkd.io import atomic_write_json, atomic_write_with, read_json

OUTPUTS = "outputs.safetensors"
META = "outputs.json"
EMBEDDING_DTYPES = ("float32", "float16")


@dataclass
class TeacherOutputs:
    """A teacher's outputs for a list of utterances: one fold of a store, or what a fitted teacher predicted."""

    utt_ids: list[str]
    logits: np.ndarray  # (N, C) float32
    meta: dict
    embeddings: np.ndarray | None = None  # [N, D] or [N, L, D], as stored (float16 possible)
    pooled: np.ndarray | None = None  # [N, D] float32: a layered teacher's classifier input

    def rows(self, utt_ids: list[str], fold_dir: Path) -> list[int]:
        """Row numbers of ``utt_ids``; a missing utterance is a one-line error naming it."""
        index = {u: i for i, u in enumerate(self.utt_ids)}
        missing = [u for u in utt_ids if u not in index]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise SerkdError(f"{fold_dir}: no teacher output for utterance {missing[0]!r}{more}")
        return [index[u] for u in utt_ids]

    def aligned(self, utt_ids: list[str], fold_dir: Path) -> np.ndarray:
        """Logits in the order of ``utt_ids``; a missing utterance is a one-line error naming it."""
        return self.logits[self.rows(utt_ids, fold_dir)]


def write_fold(store: Path, fold_name: str, utt_ids: list[str], logits, meta: dict, embeddings=None,
               pooled=None, embedding_dtype: str = "float32") -> Path:
    """Write one fold's outputs; ``embeddings`` [N, D] or [N, L, D] stored as ``embedding_dtype``."""
    folder = Path(store) / fold_name
    if embedding_dtype not in EMBEDDING_DTYPES:
        raise ValueError(f"embedding_dtype must be one of {', '.join(EMBEDDING_DTYPES)}, got {embedding_dtype!r}")
    tensors = {"logits": torch.as_tensor(np.asarray(logits, dtype=np.float32)).contiguous()}
    if embeddings is not None:
        tensors["embeddings"] = torch.as_tensor(np.asarray(embeddings, dtype=embedding_dtype)).contiguous()
    if pooled is not None:
        tensors["pooled"] = torch.as_tensor(np.asarray(pooled, dtype=np.float32)).contiguous()
    if any(t.shape[0] != len(utt_ids) for t in tensors.values()):
        raise ValueError("one logit (and embedding) row per utterance id")
    atomic_write_with(folder / OUTPUTS, lambda tmp: save_file(tensors, str(tmp)), suffix=".safetensors")
    atomic_write_json(folder / META, {**meta, "fold": fold_name, "utt_ids": list(utt_ids)})
    return folder


def write_outputs(store: Path, fold_name: str, outputs: TeacherOutputs) -> Path:
    """Write one fold's outputs as a fitted teacher predicted them (float16 embeddings stay float16)."""
    half = outputs.embeddings is not None and np.asarray(outputs.embeddings).dtype == np.float16
    return write_fold(store, fold_name, outputs.utt_ids, outputs.logits, outputs.meta, outputs.embeddings,
                      outputs.pooled, "float16" if half else "float32")


def read_fold(store: Path, fold_name: str) -> TeacherOutputs:
    folder = Path(store) / fold_name
    if not (folder / META).is_file() or not (folder / OUTPUTS).is_file():
        have = sorted(p.name for p in Path(store).iterdir() if (p / META).is_file()) if Path(store).is_dir() else []
        raise SerkdError(
            f"{folder}: missing teacher outputs for fold {fold_name!r} (store has: {', '.join(have) or 'nothing'})"
        )
    meta = read_json(folder / META)
    tensors = load_file(str(folder / OUTPUTS))
    embeddings, pooled = tensors.get("embeddings"), tensors.get("pooled")
    return TeacherOutputs(
        meta.pop("utt_ids"),
        tensors["logits"].numpy(),
        meta,
        None if embeddings is None else embeddings.numpy(),
        None if pooled is None else pooled.numpy(),
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
    return stable_hash(config)


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


def utterance_hashes(manifest) -> dict[str, str]:
    """utt_id -> SHA-1 of its audio: what a store records so a student can tell stale outputs."""
    by_path = manifest.audio_hashes()
    return {u.utt_id: by_path[str(u.path)] for u in manifest.utterances}


def stale_utterances(store: Path, fold_name: str, manifest, data_hash: str,
                     hashes: dict[str, str] | None = None) -> int | None:
    """How many of the corpus' utterances have teacher outputs computed on other audio (0: none).

    Stores record each utterance's audio hash (``audio_sha1``, parallel to ``utt_ids``), so a student
    on a subset of the teacher's corpus is fine; older stores only have the corpus' data hash, compared
    whole. None: the store records neither.
    """
    meta = read_json(Path(store) / fold_name / META)
    recorded = meta.get("audio_sha1")
    if recorded and len(recorded) == len(meta.get("utt_ids", [])):
        teacher = dict(zip(meta["utt_ids"], recorded))
        ours = hashes if hashes is not None else utterance_hashes(manifest)
        return sum(1 for utt, digest in ours.items() if utt in teacher and teacher[utt] != digest)
    if meta.get("data_hash"):
        return 0 if meta["data_hash"] == data_hash else len(manifest)
    return None


def recorded_corpus(store: Path) -> dict | None:
    """``{"corpus", "root", "corpus_options"}`` as the store recorded them (teacher eval needs no flags)."""
    for name in folds_in(store) if Path(store).is_dir() else []:
        meta = read_meta(store, name)
        if meta.get("corpus") and meta.get("root"):
            return {"corpus": meta["corpus"], "root": meta["root"], "corpus_options": meta.get("corpus_options", {})}
    return None


def embedding_matrix(outputs: TeacherOutputs, layer: int | str | None, store_path: str | Path,
                     method: str | None = None) -> np.ndarray:
    """The teacher embeddings a feature-KD method compares with, [N, D] float32, rows as ``outputs.utt_ids``.

    ``layer``: ``None`` (the default of the feature methods) = the store's natural choice: the vector
    of a 2-D store, the ``"weighted"`` sum of a layered one; ``"weighted"`` = sum_l softmax(w)_l h_l
    with w = meta ``layer_weights`` (the teacher's learned SUPERB layer weights); an int (or its
    string, e.g. from ``--method-param teacher_layer=6``) = that layer of a layered store, negative
    counts from the last, 0 is the CNN output; ``"pooled"`` = the classifier's input (a layered
    store's ``pooled`` tensor, or a 2-D store's vector). ``store_path`` (the fold folder) and
    ``method`` (the KD method's name) are for messages only.
    """
    folder = Path(store_path)
    if outputs.embeddings is None:
        who = f"feature KD (method {method})" if method else "feature KD"
        raise SerkdError(f"{folder}: teacher outputs have no embeddings; {who} needs a teacher store written "
                         "with embeddings (train a WavLM teacher again: older stores hold logits only)")
    try:
        layer = layer_choice(layer)
    except ValueError as exc:
        raise SerkdError(f"{folder}: {exc}") from None
    emb = outputs.embeddings
    if emb.ndim == 2:
        if layer not in (None, "pooled"):
            raise SerkdError(f"{folder}: teacher embeddings are one vector per utterance (no layers); "
                             f"teacher_layer must be unset or 'pooled', got {layer!r}")
        return np.asarray(emb, dtype=np.float32)
    if emb.ndim != 3:
        raise SerkdError(f"{folder}: teacher embeddings must be [N, D] or [N, L, D], got shape {emb.shape}")
    n_layers = emb.shape[1]
    if layer == "pooled":
        if outputs.pooled is None:
            raise SerkdError(f"{folder}: teacher outputs have no pooled vector; use teacher_layer 'weighted' "
                             f"or a layer 0..{n_layers - 1}")
        return np.asarray(outputs.pooled, dtype=np.float32)
    if layer is None or layer == "weighted":
        raw = outputs.meta.get("layer_weights")
        if raw is None or len(raw) != n_layers:
            raise SerkdError(f"{folder}: teacher_layer 'weighted' needs meta layer_weights with {n_layers} values "
                             f"(outputs.json has {'none' if raw is None else len(raw)}); choose a layer instead")
        w = np.asarray(raw, dtype=np.float64)
        w = np.exp(w - w.max())
        w /= w.sum()
        return np.einsum("nld,l->nd", emb.astype(np.float32), w.astype(np.float32))
    if not -n_layers <= layer < n_layers:
        raise SerkdError(f"{folder}: teacher_layer {layer} out of range for {n_layers} stored layers "
                         f"(0..{n_layers - 1}, or negative from the last)")
    return np.asarray(emb[:, layer], dtype=np.float32)


def layer_choice(layer) -> int | str | None:
    """A valid ``teacher_layer``: None, 'weighted', 'pooled' or an int (digit strings too); ValueError otherwise."""
    if layer is None or layer in ("weighted", "pooled"):
        return layer
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
        return int(layer)
    if isinstance(layer, str) and layer.strip().lstrip("-").isdigit():
        return int(layer)
    raise ValueError(f"teacher_layer must be a layer number, 'weighted' or 'pooled', got {layer!r}")
