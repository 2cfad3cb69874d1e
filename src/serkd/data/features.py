"""Feature kinds, per utterance, cached on disk by audio content hash + feature config.

A feature kind is one registered entry (:data:`FEATURE_KINDS`, ``@register_kind``): its parameters, whether
it standardises each waveform first, the normalisation it defaults to and the function that turns a
waveform into a (F, T) float32 array. Per waveform (16 kHz mono): centre-crop to ``length`` samples if
longer; for the seed's presets normalise over its real samples, (x - mean) / sqrt(var + 1e-7); zero-pad at
the end to ``length``. Then
- ``mel`` (seed): power mel spectrogram (n_fft 1024, hop 256, 128 mels), dB with ref = max of the utterance
  (the seed takes the max over the whole batch; per utterance is cacheable and batch-independent);
- ``mfcc`` (seed): 40 MFCCs (n_fft 1024, 512-sample Hamming window, hop 128, 128 mels, fmax 8000);
- ``logmel``: ``log(mel + 1e-6)`` of the raw waveform, no waveform normalisation and no per-utterance
  reference, so the level (loudness, the main arousal cue) is kept: the original Light-SERNet's input, with
  the mel preset's frames and bins.

The seed's presets erase level per utterance themselves, so their default normalisation (see
:mod:`serkd.data.normalize`) is ``utterance`` (nothing more at batch time); ``logmel`` defaults to
``corpus``. Padding: a clip shorter than ``length`` is zero-padded, so its last frames are padding (for
``logmel`` exactly ``log(1e-6)`` = -13.8 in every bin); :func:`real_frames` says how many frames of each
utterance hold audio, and every statistic is taken over those only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import librosa
import numpy as np

from serkd.data.audio import SAMPLE_RATE, load_audio
from serkd.data.cache import NpyCache, cache_root
from serkd.data.manifest import CorpusProblems, Manifest, Utterance
from serkd.errors import BadInputError, SerkdError
from serkd.hashing import stable_hash
from serkd.registry import Registry

T = TypeVar("T")
FEATURE_VERSION = 1  # bump when the computation changes: old cache entries are then never read
LOGMEL_EPS = 1e-6  # log(mel + eps): the original Light-SERNet's floor (power of a [-1, 1] waveform)


@dataclass(frozen=True)
class FeatureKind:
    """One registered feature kind: what :func:`compute_features` does for it."""

    name: str
    params: dict
    compute: Callable[[np.ndarray, dict, int], np.ndarray]  # (cropped, padded wave, params, rate) -> (F, T)
    normalise_waveform: bool  # standardise each waveform over its real samples first (the seed's presets)
    default_normalize: str  # serkd.data.normalize's choice when the config leaves it unset
    description: str


FEATURE_KINDS: Registry[FeatureKind] = Registry("feature kind")


def register_kind(name: str, params: dict, *, normalise_waveform: bool, default_normalize: str, description: str):
    """Decorator: register ``compute(wave, params, sample_rate) -> (F, T)`` as feature kind ``name``."""

    def wrap(compute):
        FEATURE_KINDS.register(name)(FeatureKind(name, params, compute, normalise_waveform, default_normalize,
                                                 description))
        return compute

    return wrap


@register_kind("mel", {"n_fft": 1024, "hop_length": 256, "n_mels": 128, "power": 2.0}, normalise_waveform=True,
               default_normalize="utterance",
               description="the seed's: power mel of the unit-variance waveform, dB re the utterance's max")
def _mel(x: np.ndarray, p: dict, rate: int) -> np.ndarray:
    power = librosa.feature.melspectrogram(y=x, sr=rate, n_fft=p["n_fft"], hop_length=p["hop_length"],
                                           n_mels=p["n_mels"], power=p["power"])
    return librosa.power_to_db(power, ref=np.max).astype(np.float32)


@register_kind("mfcc", {"n_mfcc": 40, "n_fft": 1024, "win_length": 512, "window": "hamming", "hop_length": 128,
                        "n_mels": 128, "fmax": 8000.0}, normalise_waveform=True, default_normalize="utterance",
               description="the seed's: 40 MFCCs of the unit-variance waveform")
def _mfcc(x: np.ndarray, p: dict, rate: int) -> np.ndarray:
    return librosa.feature.mfcc(
        y=x, sr=rate, n_mfcc=p["n_mfcc"], n_fft=p["n_fft"], win_length=p["win_length"], window=p["window"],
        hop_length=p["hop_length"], n_mels=p["n_mels"], fmax=p["fmax"],
    ).astype(np.float32)


@register_kind("logmel", {"n_fft": 1024, "hop_length": 256, "n_mels": 128, "power": 2.0, "eps": LOGMEL_EPS},
               normalise_waveform=False, default_normalize="corpus",
               description="log(mel + 1e-6) of the raw waveform: level (loudness) kept")
def _logmel(x: np.ndarray, p: dict, rate: int) -> np.ndarray:
    power = librosa.feature.melspectrogram(y=x, sr=rate, n_fft=p["n_fft"], hop_length=p["hop_length"],
                                           n_mels=p["n_mels"], power=p["power"])
    return np.log(power + np.float32(p["eps"])).astype(np.float32)


def feature_kinds() -> list[str]:
    return FEATURE_KINDS.available()


def feature_kind(name: str) -> FeatureKind:
    try:
        return FEATURE_KINDS.get(name)
    except ValueError as exc:
        raise SerkdError(str(exc)) from None


# each kind's parameters by name (read-only view kept for callers of the former preset table)
PRESETS: dict[str, dict] = {name: FEATURE_KINDS.get(name).params for name in FEATURE_KINDS.available()}
DEFAULT_LENGTH = {"emodb": 80000, "iemocap": 200000, "synth": 24000, "csv": 80000}


@dataclass(frozen=True)
class FeatureConfig:
    kind: str = "mel"
    length: int = 80000
    sample_rate: int = SAMPLE_RATE
    params: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise SerkdError(f"unknown feature kind {self.kind!r} (available: {', '.join(feature_kinds())})")
        if self.length <= 0:
            raise SerkdError("feature length must be a positive number of samples")
        object.__setattr__(self, "params", {**feature_kind(self.kind).params, **self.params})

    @property
    def spec(self) -> FeatureKind:
        return feature_kind(self.kind)

    @property
    def hop(self) -> int:
        return int(self.params["hop_length"])

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
    return pad_to(wave, length)


def pad_to(wave: np.ndarray, length: int) -> np.ndarray:
    """``wave`` as float32, zero-padded at the end to ``length`` samples (a longer one is left whole)."""
    out = np.zeros(max(length, len(wave)), dtype=np.float32)
    out[: len(wave)] = wave
    return out


def compute_features(wave: np.ndarray, config: FeatureConfig, whole: bool = False) -> np.ndarray:
    """Features of one waveform, shape (F, frames), float32.

    ``whole``: no crop; a waveform longer than ``length`` gives more frames (what an exported graph computes
    for a long window); a shorter one is padded to ``length`` as in training."""
    spec = config.spec
    if whole:
        x = wave.astype(np.float64)
        if spec.normalise_waveform:
            x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        x = pad_to(x, config.length)
    elif spec.normalise_waveform:
        x = crop_normalise_pad(wave, config.length)
    else:
        x = pad_to(crop(wave, config.length), config.length)
    return spec.compute(x, config.params, config.sample_rate)


def real_frames(samples: int | np.ndarray, config: FeatureConfig, whole: bool = False) -> int | np.ndarray:
    """How many frames of an utterance of ``samples`` samples hold audio: frames are centred every hop
    (``center=True``), so frame t is real when t * hop < the real samples (after the crop to ``length``,
    unless ``whole``); the frames past them cover the zero padding (a half-real last frame counts as padding)."""
    real = np.asarray(samples) if whole else np.minimum(samples, config.length)
    frames = -(-real // config.hop)  # ceil
    if not whole:
        frames = np.minimum(frames, 1 + config.length // config.hop)
    return int(frames) if np.ndim(frames) == 0 else frames.astype(np.int64)


def audio_samples(path: str | Path, sample_rate: int = SAMPLE_RATE) -> int:
    """Samples of the file at ``sample_rate`` as :func:`serkd.data.audio.load_audio` gives them: read from the
    header when the file is at that rate, else decoded (resampling decides the count)."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        if info.samplerate == sample_rate:
            return int(info.frames)
    except Exception:  # an unreadable header: load_audio names the problem
        pass
    return len(load_audio(path, sample_rate))


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
