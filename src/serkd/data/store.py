"""Features of a whole corpus as one memory-mapped array on disk, so training never holds them all in RAM.

    features, manifest, info = feature_store(manifest, FeatureConfig("mel", 80000), dtype="float16")
    x = features[torch.tensor([5, 2, 9])]      # (3, 1, F, T) float32 tensor, rows in the order asked

Where it sits: after the per-utterance feature cache (:class:`serkd.data.features.FeatureCache`), before
the training loop. One ``.npy`` file per (the corpus' audio in manifest order, feature config, storage
dtype) under ``<cache>/stores/``, built once from the per-utterance cache and opened with
``np.load(mmap_mode="r")``: the operating system pages in the rows a batch touches and may drop them
again, so a process' anonymous memory does not grow with the corpus. A batch is a gather by index;
indices are sorted before the read (neighbouring rows share pages) and the rows put back in the order
asked, so the loop's ``features[idx]`` is unchanged.

``float16`` storage halves the file (the mel preset's dB values lie in [-80, 0], where float16's step is
at most 1/16 dB); rows are widened to float32 on the way out. ``float32`` (the default) gives exactly the
numbers the in-RAM matrix gave.

Several processes may build the same store at once: the builder holds ``<store>.lock``, writes to a
temporary file and renames it into place, then writes the sidecar ``<store>.json`` (rows, skipped files)
that readers look for first; a reader never sees a half-written array.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from serkd.data.cache import cache_root
from serkd.data.features import FeatureCache, FeatureConfig, audio_samples, per_utterance, real_frames
from serkd.data.manifest import Manifest
from serkd.errors import SerkdError
from serkd.io import atomic_path, atomic_write_json, locked, read_json

STORE_DTYPES = ("float32", "float16")
STORE_VERSION = 1


class MappedFeatures:
    """A (N, F, T) array (memory-mapped or not) seen as the (N, 1, F, T) float32 tensor the loop indexes.

    ``path``: the store file it maps (None for an in-RAM array); per-store facts computed later (each row's
    real frames, per-speaker statistics) are kept beside it or memoised in ``memo``."""

    def __init__(self, array: np.ndarray, path: Path | None = None):
        self.array = array
        self.path = path
        self.memo: dict = {}

    @property
    def shape(self) -> tuple[int, ...]:
        n, f, t = self.array.shape
        return (n, 1, f, t)

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        if isinstance(idx, int | np.integer):
            return torch.from_numpy(np.asarray(self.array[int(idx)], dtype=np.float32))[None]
        idx = np.asarray(idx, dtype=np.int64)
        order = np.argsort(idx, kind="stable")  # read in file order: neighbouring rows share pages
        # torch allocates the batch (aligned as its kernels expect: a numpy buffer's alignment can change
        # which conv kernel runs, and so the last bits of the loss)
        rows = torch.empty((len(idx), 1, *self.array.shape[1:]), dtype=torch.float32)
        rows.numpy()[order, 0] = self.array[idx[order]]
        return rows


@dataclass
class StoreInfo:
    path: Path
    built: bool  # this call wrote the store (else it was reused)
    computed: int = 0  # per-utterance features computed while building
    reused: int = 0  # per-utterance features read from their cache while building

    def line(self) -> str:
        if not self.built:
            return f"features: memory-mapped store reused ({self.path})"
        return (f"features: {self.computed} computed, {self.reused} from cache, memory-mapped store written "
                f"({self.path})")


def store_key(manifest: Manifest, config: FeatureConfig, dtype: str) -> str:
    """Identity of a store: every utterance's audio hash in manifest order, the feature config, the dtype."""
    hashes = manifest.audio_hashes()
    digest = hashlib.sha1(json.dumps([STORE_VERSION, config.to_json(), dtype], sort_keys=True).encode())
    for utt in manifest.utterances:
        digest.update(hashes[str(utt.path)].encode() + b"\n")
    return digest.hexdigest()[:20]


def store_path(manifest: Manifest, config: FeatureConfig, dtype: str = "float32", root: Path | None = None) -> Path:
    return (root or cache_root() / "stores") / f"{config.kind}-{store_key(manifest, config, dtype)}-{dtype}.npy"


def feature_store(
    manifest: Manifest,
    config: FeatureConfig,
    skip_bad: bool = False,
    progress: Callable[[int], None] | None = None,
    dtype: str = "float32",
    root: Path | None = None,
) -> tuple[MappedFeatures, Manifest, StoreInfo]:
    """The corpus' features as a memory-mapped store (built if missing), the manifest of its rows, and
    whether it was built or reused. Bad audio fails as :func:`serkd.data.features.feature_matrix` does,
    or with ``skip_bad`` its files are dropped (and the returned manifest says how many)."""
    if dtype not in STORE_DTYPES:
        raise SerkdError(f"feature store dtype must be one of {', '.join(STORE_DTYPES)}, not {dtype!r}")
    path = store_path(manifest, config, dtype, root)
    opened = _open(path, manifest, skip_bad)
    if opened is not None:
        if progress:
            progress(len(manifest))
        return (*opened, StoreInfo(path, built=False))
    with locked(path.with_suffix(".lock")):
        opened = _open(path, manifest, skip_bad)  # another process may have built it while we waited
        if opened is not None:
            if progress:
                progress(len(manifest))
            return (*opened, StoreInfo(path, built=False))
        info = _build(path, manifest, config, skip_bad, progress, dtype)
    features, kept = _open(path, manifest, skip_bad=True)
    return features, kept, info


def _open(path: Path, manifest: Manifest, skip_bad: bool) -> tuple[MappedFeatures, Manifest] | None:
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file() or not path.is_file():
        return None
    try:
        meta = read_json(sidecar)
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None  # a damaged store is rebuilt, never trusted
    if meta.get("skipped") and not skip_bad:
        return None  # built with bad files dropped: rebuild so the problems are reported
    rows = int(meta["rows"])
    kept = manifest
    if meta.get("kept") is not None:
        kept = manifest.subset(meta["kept"])
        kept.notes = [*manifest.notes, f"skipped {len(manifest) - len(kept)} bad audio file(s)"]
    if len(kept) != rows or array.shape[0] < rows:
        return None
    return MappedFeatures(array[:rows], path), kept


def _build(path: Path, manifest: Manifest, config: FeatureConfig, skip_bad: bool,
           progress: Callable[[int], None] | None, dtype: str) -> StoreInfo:
    cache = FeatureCache(config)
    hashes = manifest.audio_hashes()
    shape = config.shape()
    with atomic_path(path, suffix=".npy") as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(dtype), shape=(len(manifest), *shape))
        written = 0

        def write(utt) -> None:
            nonlocal written
            array[written] = cache.get(utt.path, hashes[str(utt.path)])
            written += 1

        _, kept = per_utterance(manifest, write, skip_bad, progress)
        array.flush()
        array = None  # unmap before the rename
    index = {id(u): i for i, u in enumerate(manifest.utterances)}
    kept_rows = None if len(kept) == len(manifest) else [index[id(u)] for u in kept.utterances]
    atomic_write_json(path.with_suffix(".json"), {
        "version": STORE_VERSION, "rows": written, "shape": [written, *shape], "dtype": dtype,
        "features": config.to_json(), "kept": kept_rows, "skipped": len(manifest) - written,
    })
    return StoreInfo(path, built=True, computed=cache.computed, reused=cache.reused)


def row_frames(features: MappedFeatures, manifest: Manifest, config: FeatureConfig) -> np.ndarray:
    """Each row's real frames (:func:`serkd.data.features.real_frames`: frames holding audio, not padding), rows
    as ``manifest`` (the store's kept rows). Computed once from the audio headers and kept beside the store as
    ``<store>.frames.npy`` (written atomically), so statistics never count padded frames."""
    key = ("frames", config.key())
    if key in features.memo:
        return features.memo[key]
    cached = features.path.with_suffix(".frames.npy") if features.path is not None else None
    frames = None
    if cached is not None and cached.is_file():
        try:
            frames = np.load(cached, allow_pickle=False)
        except (OSError, ValueError):
            frames = None  # damaged: recomputed
        if frames is not None and frames.shape != (len(features),):
            frames = None
    if frames is None:
        samples = np.array([audio_samples(u.path, config.sample_rate) for u in manifest.utterances], dtype=np.int64)
        frames = np.asarray(real_frames(samples, config), dtype=np.int64)
        if cached is not None:
            with atomic_path(cached, suffix=".npy") as tmp, open(tmp, "wb") as handle:
                np.save(handle, frames, allow_pickle=False)
    features.memo[key] = frames
    return frames
