"""Seed feature presets, per utterance, cached on disk by audio content hash + feature config.

Per waveform (16 kHz mono): centre-crop to ``length`` samples if longer; normalise over its real
samples, (x - mean) / sqrt(var + 1e-7); zero-pad at the end to ``length``. Then
- ``mel``: power mel spectrogram (n_fft 1024, hop 256, 128 mels), dB with ref = max of the utterance
  (the seed takes the max over the whole batch; per utterance is cacheable and batch-independent);
- ``mfcc``: 40 MFCCs (n_fft 1024, 512-sample Hamming window, hop 128, 128 mels, fmax 8000).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TypeVar

import librosa
import numpy as np

from serkd.data.audio import SAMPLE_RATE, load_audio
from serkd.data.cache import NpyCache, cache_root
from serkd.data.manifest import CorpusProblems, Manifest, Utterance
from serkd.errors import BadInputError, SerkdError
from serkd.hashing import stable_hash

T = TypeVar("T")
FEATURE_VERSION = 1  # bump when the computation changes: old cache entries are then never read

PRESETS: dict[str, dict] = {
    "mel": {"n_fft": 1024, "hop_length": 256, "n_mels": 128, "power": 2.0},
    "mfcc": {"n_mfcc": 40, "n_fft": 1024, "win_length": 512, "window": "hamming", "hop_length": 128,
             "n_mels": 128, "fmax": 8000.0},
}
DEFAULT_LENGTH = {"emodb": 80000, "iemocap": 200000, "synth": 24000, "csv": 80000}


@dataclass(frozen=True)
class FeatureConfig:
    kind: str = "mel"
    length: int = 80000
    sample_rate: int = SAMPLE_RATE
    params: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in PRESETS:
            raise SerkdError(f"unknown feature kind {self.kind!r} (available: {', '.join(PRESETS)})")
        if self.length <= 0:
            raise SerkdError("feature length must be a positive number of samples")
        object.__setattr__(self, "params", {**PRESETS[self.kind], **self.params})

    def to_json(self) -> dict:
        return {**asdict(self), "version": FEATURE_VERSION}

    def key(self) -> str:
        return stable_hash(self.to_json(), 12)

    def shape(self) -> tuple[int, int]:
        return compute_features(np.ones(self.length, dtype=np.float32), self).shape


def crop(wave: np.ndarray, length: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """The centre ``length`` samples of a longer waveform (a random window with ``rng``); shorter ones as is."""
    if len(wave) <= length:
        return wave
    start = (len(wave) - length) // 2 if rng is None else int(rng.integers(0, len(wave) - length + 1))
    return wave[start : start + length]


def crop_normalise_pad(wave: np.ndarray, length: int) -> np.ndarray:
    wave = crop(wave, length).astype(np.float64)
    wave = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
    out = np.zeros(length, dtype=np.float32)
    out[: len(wave)] = wave
    return out


def compute_features(wave: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Features of one waveform, shape (n_mels or n_mfcc, frames), float32."""
    x = crop_normalise_pad(wave, config.length)
    p = config.params
    if config.kind == "mel":
        power = librosa.feature.melspectrogram(
            y=x, sr=config.sample_rate, n_fft=p["n_fft"], hop_length=p["hop_length"], n_mels=p["n_mels"],
            power=p["power"],
        )
        return librosa.power_to_db(power, ref=np.max).astype(np.float32)
    return librosa.feature.mfcc(
        y=x, sr=config.sample_rate, n_mfcc=p["n_mfcc"], n_fft=p["n_fft"], win_length=p["win_length"],
        window=p["window"], hop_length=p["hop_length"], n_mels=p["n_mels"], fmax=p["fmax"],
    ).astype(np.float32)


class FeatureCache(NpyCache):
    """``<cache>/features/<config key>/<audio sha1>.npy``; counts computed vs. reused entries."""

    def __init__(self, config: FeatureConfig, root=None):
        super().__init__((root or cache_root() / "features") / config.key())
        self.config = config

    def get(self, path, audio_hash: str) -> np.ndarray:
        return self.get_or_compute(audio_hash, lambda: compute_features(load_audio(path, self.config.sample_rate),
                                                                         self.config))


def feature_matrix(
    manifest: Manifest,
    config: FeatureConfig,
    skip_bad: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, Manifest, FeatureCache]:
    """Features of every utterance as one (N, F, T) float32 array, in manifest order.

    Bad audio (corrupt, empty, silent, NaN) is collected over the whole corpus: all problems are
    reported together, or with ``skip_bad`` the files are dropped and the returned manifest says so.
    """
    cache = FeatureCache(config)
    hashes = manifest.audio_hashes()
    rows, kept_manifest = per_utterance(manifest, lambda utt: cache.get(utt.path, hashes[str(utt.path)]), skip_bad,
                                        progress)
    return np.stack(rows), kept_manifest, cache


def per_utterance(
    manifest: Manifest,
    read: Callable[[Utterance], T],
    skip_bad: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[T], Manifest]:
    """``read`` every utterance, in manifest order, collecting the BadInputErrors it raises.

    All problems are reported together, or with ``skip_bad`` the files are dropped and the returned
    manifest (of the utterances read) says how many.
    """
    rows, problems, kept = [], [], []
    for i, utt in enumerate(manifest.utterances):
        try:
            rows.append(read(utt))
            kept.append(i)
        except BadInputError as problem:
            problems.append(problem)
        if progress:
            progress(1)
    if problems and not skip_bad:
        raise CorpusProblems(problems, hint=f"{len(problems)} bad audio file(s); skip_bad drops them")
    if not rows:
        raise SerkdError(f"{manifest.root}: no usable utterances")
    kept_manifest = manifest.subset(kept)
    if problems:
        kept_manifest.notes = [*manifest.notes, f"skipped {len(problems)} bad audio file(s)"]
    return rows, kept_manifest
