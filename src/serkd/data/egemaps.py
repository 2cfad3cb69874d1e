"""eGeMAPSv02 functionals (Eyben et al., 2016) per utterance, cached on disk by audio content hash + feature set.

The classical SER baseline's input: 88 hand-crafted acoustic parameters (pitch, loudness, jitter,
shimmer, formants, spectral slopes, rates... and their statistics over the whole utterance), computed by
openSMILE (the ``opensmile`` package) on the *whole* 16 kHz mono waveform: functionals summarise an
utterance of any length, so no crop applies. Sits beside ``data/features.py`` (mel/MFCC) in the flow:
manifest -> eGeMAPS matrix [N, 88] -> the eGeMAPS teacher (``train/teachers/egemaps.py``).

Cache layout: ``<cache>/egemaps/<feature key>/<audio sha1>.npy``; the key covers the feature set, level,
sample rate and the opensmile version, so another extractor never reads these entries.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np

from serkd.data.audio import SAMPLE_RATE, load_audio
from serkd.data.cache import NpyCache, cache_root
from serkd.data.features import per_utterance
from serkd.data.manifest import Manifest
from serkd.errors import SerkdError
from serkd.hashing import stable_hash

EGEMAPS_VERSION = 1  # bump when the computation changes: old cache entries are then never read
N_FEATURES = 88


def _opensmile():
    try:
        import opensmile
    except ImportError:
        raise SerkdError("the eGeMAPS teacher needs the opensmile package (pip install opensmile)") from None
    return opensmile


def feature_set() -> dict:
    """What the cached numbers depend on (the cache key's contents)."""
    opensmile = _opensmile()
    return {"feature_set": "eGeMAPSv02", "level": "functionals", "sample_rate": SAMPLE_RATE,
            "opensmile": opensmile.__version__, "version": EGEMAPS_VERSION}


def feature_key() -> str:
    return stable_hash(feature_set(), 12)


@cache
def _smile():
    opensmile = _opensmile()
    return opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                           feature_level=opensmile.FeatureLevel.Functionals)


def feature_names() -> list[str]:
    return list(_smile().feature_names)


def extract(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The 88 eGeMAPSv02 functionals of one waveform, float32."""
    frame = _smile().process_signal(np.asarray(wave, dtype=np.float32), sample_rate)
    values = frame.to_numpy(dtype=np.float32).reshape(-1)
    if values.shape != (N_FEATURES,):
        raise SerkdError(f"openSMILE returned {values.shape} eGeMAPS values, expected {N_FEATURES}")
    return values


class EgemapsCache(NpyCache):
    """``<cache>/egemaps/<key>/<audio sha1>.npy``; counts computed vs. reused entries."""

    def __init__(self, root=None):
        super().__init__((root or cache_root() / "egemaps") / feature_key(), lambda v: v.shape == (N_FEATURES,))

    def get(self, path, audio_hash: str) -> np.ndarray:
        return self.get_or_compute(audio_hash, lambda: extract(load_audio(path, SAMPLE_RATE)))


def egemaps_matrix(manifest: Manifest, skip_bad: bool = False, progress: Callable[[int], None] | None = None
                   ) -> tuple[np.ndarray, Manifest, EgemapsCache]:
    """eGeMAPS functionals of every utterance as one (N, 88) float32 array, in manifest order (bad audio:
    as :func:`serkd.data.features.feature_matrix`)."""
    store = EgemapsCache()
    hashes = manifest.audio_hashes()
    rows, kept = per_utterance(manifest, lambda utt: store.get(utt.path, hashes[str(utt.path)]), skip_bad, progress)
    return np.stack(rows), kept, store
