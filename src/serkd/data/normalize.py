"""Feature normalisation per fold, applied at batch time over the cached (un-normalised) features.

Where it sits: after the memory-mapped feature store (:mod:`serkd.data.store`), before the training loop.
Features stay cached as the feature kind computes them; a fold's normalisation wraps the store in
:class:`NormalizedFeatures` (the same ``features[idx] -> (B, 1, F, T)`` interface), so the loop never
knows. Every statistic is a mean and a standard deviation **per feature bin** over **real frames** only
(:func:`serkd.data.features.real_frames`: zero-padded frames never count), ``std = sqrt(var + VAR_EPS)``,
and a row is standardised as ``(x - mean) / std``, padding frames included (they stay what the model saw
in training: the same transform everywhere).

- ``utterance``: each utterance on its own. The seed's presets (``mel``, ``mfcc``) already standardise every
  waveform and take dB re the utterance's maximum, so for them this adds nothing (today's features, bit for
  bit); for ``logmel`` it standardises each utterance's bins over its own real frames.
- ``speaker``: each speaker with its own statistics over all of its utterances' real frames. For the test
  (and validation) speaker that is its own unlabelled audio: the usual transductive practice of SER papers,
  so the drivers mark results ``speaker-normalised``. No statistic mixes two speakers.
- ``corpus``: one set of statistics from the fold's **training** speakers only (never its validation or test
  speakers), applied to every utterance; a final model (no held-out speakers) takes every speaker's.
- ``none``: the features as cached.

``fold_normalization`` builds a fold's wrapper and the record that goes into the fold's
``checkpoint.json`` (``normalization``), which export reads to put the same computation in the graph.
The torch functions here (:func:`standardise`, :func:`utterance_standardise`, :func:`frame_mask`) are the
ones the exported front-end uses too (:mod:`serkd.deploy.frontend`), so training and the graph agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from serkd.data.features import FeatureConfig, feature_kind
from serkd.data.manifest import Manifest
from serkd.data.statistics import NORMALIZE_CHOICES, VAR_EPS, Moments, Statistics
from serkd.data.store import MappedFeatures, row_frames
from serkd.errors import SerkdError

__all__ = [
    "NORMALIZE_CHOICES",
    "VAR_EPS",
    "FoldNormalization",
    "Moments",
    "NormalizedFeatures",
    "Statistics",
    "fold_normalization",
    "for_checkpoint",
    "frame_mask",
    "masked_moments",
    "resolve",
    "standardise",
    "utterance_standardise",
]

CHUNK_ROWS = 256  # rows read at once while gathering statistics (memory stays bounded on any corpus)


def resolve(normalize: str | None, kind: str) -> str:
    """The normalisation a run uses: ``normalize``, or the feature kind's default when it is None."""
    if normalize is None:
        return feature_kind(kind).default_normalize
    if normalize not in NORMALIZE_CHOICES:
        raise SerkdError(f"normalize: must be one of {', '.join(NORMALIZE_CHOICES)}, not {normalize!r}")
    return normalize


def is_identity(normalize: str, kind: str) -> bool:
    """The cached features are used as they are: ``none``, or ``utterance`` on a kind that standardises each
    waveform itself (the seed's presets)."""
    return normalize == "none" or (normalize == "utterance" and feature_kind(kind).normalise_waveform)


# ---------------------------------------------------------------- statistics over a store (numpy, float64)

def row_moments(rows: np.ndarray, frames: np.ndarray) -> list[Moments]:
    """Moments of each (F, T) row over its first ``frames`` frames."""
    t = rows.shape[-1]
    mask = np.arange(t)[None, :] < np.asarray(frames)[:, None]  # (B, T)
    x = rows.astype(np.float64) * mask[:, None, :]
    return [Moments(int(n), s, q) for n, s, q in zip(mask.sum(1), x.sum(-1), (x * x).sum(-1))]


def speaker_moments(features: MappedFeatures, frames: np.ndarray, speakers: list[str]) -> dict[str, Moments]:
    """Each speaker's moments over its utterances' real frames (one pass over the store, memoised on it)."""
    key = ("speaker_moments", tuple(speakers), frames.tobytes())
    memo = getattr(features, "memo", None)
    if memo is not None and key in memo:
        return memo[key]
    bins = features.shape[2]
    out: dict[str, Moments] = {}
    array = features.array if isinstance(features, MappedFeatures) else None
    for start in range(0, len(features), CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, len(features))
        rows = np.asarray(array[start:stop]) if array is not None else \
            features[np.arange(start, stop)].numpy()[:, 0]
        for speaker, moments in zip(speakers[start:stop], row_moments(rows, frames[start:stop])):
            out[speaker] = out.get(speaker, Moments.zero(bins)) + moments
    if memo is not None:
        memo[key] = out
    return out


# ---------------------------------------------------------------- the transform (torch, shared with the graph)

def frame_mask(frames, t) -> torch.Tensor:
    """(B, 1, T) float mask of the real frames for ``frames`` (B,) in a tensor, or (1, 1, T) for one count
    shared by the batch (an int, or a symbolic size while exporting)."""
    if isinstance(frames, torch.Tensor):
        positions = torch.arange(t, device=frames.device)
        return (positions < frames.reshape(-1, 1)).unsqueeze(1).float()
    return (torch.arange(t) < frames).float().reshape(1, 1, -1)


def masked_moments(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real-frame count (B, 1), sum and sum of squares (B, F) of (B, F, T) features under a (B|1, 1, T) mask."""
    masked = x * mask
    return mask.sum(-1), masked.sum(-1), (masked * x).sum(-1)


def standardise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std per bin: (B, F, T) with (F,) or (B, F) statistics."""
    return (x - mean.unsqueeze(-1)) / std.unsqueeze(-1)


def utterance_standardise(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each (F, T) row standardised per bin with its own statistics over its real frames (``mask``)."""
    count, total, _ = masked_moments(x, mask)
    mean = total / count
    centred = x - mean.unsqueeze(-1)
    var = (centred * centred * mask).sum(-1) / count
    return centred / torch.sqrt(var + VAR_EPS).unsqueeze(-1)


# ---------------------------------------------------------------- the wrapper the loop indexes

class NormalizedFeatures:
    """A feature store seen through a normalisation: ``features[idx]`` -> normalised (B, 1, F, T) float32.

    ``groups`` maps each row to a row of ``means``/``stds`` (G, F) (a speaker, or the one corpus group);
    with ``per_utterance`` each row is standardised over its own real frames (``frames``) instead.
    """

    def __init__(self, features, frames: np.ndarray, groups: np.ndarray | None = None,
                 means: np.ndarray | None = None, stds: np.ndarray | None = None, per_utterance: bool = False):
        self.features = features
        self.frames = torch.from_numpy(np.asarray(frames, dtype=np.int64))
        self.per_utterance = per_utterance
        self.groups = None if groups is None else torch.from_numpy(np.asarray(groups, dtype=np.int64))
        self.means = None if means is None else torch.from_numpy(np.asarray(means, dtype=np.float32))
        self.stds = None if stds is None else torch.from_numpy(np.asarray(stds, dtype=np.float32))

    @property
    def shape(self) -> tuple[int, ...]:
        return self.features.shape

    @property
    def dtype(self):
        return self.features.dtype

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        single = isinstance(idx, int | np.integer)
        index = np.atleast_1d(np.asarray(idx, dtype=np.int64))
        rows = self.features[index][:, 0]  # (B, F, T)
        if self.per_utterance:
            out = utterance_standardise(rows, frame_mask(self.frames[index], rows.shape[-1]))
        else:
            group = self.groups[index]
            out = standardise(rows, self.means[group], self.stds[group])
        return out[0, None] if single else out.unsqueeze(1)


@dataclass
class FoldNormalization:
    """A fold's features as the student sees them, and what to record about how."""

    normalize: str
    features: object  # MappedFeatures (identity) or NormalizedFeatures
    record: dict  # checkpoint.json's "normalization"


def normalization_for_rows(normalize: str, config: FeatureConfig, features, manifest: Manifest,
                           frames: np.ndarray, train_rows: np.ndarray, report_speakers=(),
                           train_description: str = "the fold's training speakers") -> FoldNormalization:
    """The normalisation ``normalize`` of ``features`` (rows as ``manifest``), its corpus statistics taken over
    ``train_rows`` only; ``report_speakers``' own statistics are recorded too (speaker: the test speakers)."""
    record: dict = {"normalize": normalize, "feature_kind": config.kind}
    if is_identity(normalize, config.kind):
        record["statistics"] = ("none: features as cached" if normalize == "none" else
                                f"per utterance inside the {config.kind} feature (the seed's preset)")
        return FoldNormalization(normalize, features, record)
    if normalize == "utterance":
        record["statistics"] = "per utterance: each utterance's own mean/std per bin over its real frames"
        return FoldNormalization(normalize, NormalizedFeatures(features, frames, per_utterance=True), record)
    speakers = [u.speaker for u in manifest.utterances]
    by_speaker = speaker_moments(features, frames, speakers)
    train_speakers = sorted({speakers[i] for i in np.asarray(train_rows)})
    corpus = sum((by_speaker[s] for s in train_speakers), Moments.zero(features.shape[2])).statistics()
    record["corpus"] = {**corpus.to_json(), "speakers": train_speakers}
    if normalize == "corpus":
        record["statistics"] = f"corpus: one mean/std per bin over the real frames of {train_description}"
        groups = np.zeros(len(manifest), dtype=np.int64)
        return FoldNormalization(normalize, NormalizedFeatures(features, frames, groups, corpus.mean[None],
                                                               corpus.std[None]), record)
    names = sorted(by_speaker)
    stats = {name: by_speaker[name].statistics() for name in names}
    index = {name: i for i, name in enumerate(names)}
    record["statistics"] = ("speaker: each speaker's own mean/std per bin over its utterances' real frames (test "
                            "speakers from their own unlabelled audio); 'corpus' is the fallback an exported graph "
                            "uses when given no speaker statistics")
    record["speakers"] = {s: stats[s].to_json() for s in report_speakers if s in stats}
    wrapped = NormalizedFeatures(features, frames, np.array([index[s] for s in speakers]),
                                 np.stack([stats[n].mean for n in names]), np.stack([stats[n].std for n in names]))
    return FoldNormalization(normalize, wrapped, record)


def fold_normalization(normalize: str | None, config: FeatureConfig, features, manifest: Manifest,
                       train_rows: np.ndarray, report_speakers=(), train_description: str | None = None
                       ) -> FoldNormalization:
    """The hook the drivers call: resolve ``normalize`` for the feature kind, then
    :func:`normalization_for_rows` with each row's real frames from the store."""
    normalize = resolve(normalize, config.kind)
    frames = np.zeros(len(manifest), dtype=np.int64) if is_identity(normalize, config.kind) else \
        row_frames(features, manifest, config)
    return normalization_for_rows(normalize, config, features, manifest, frames, train_rows, report_speakers,
                                  train_description or "the fold's training speakers")


def for_checkpoint(record: dict | None, config: FeatureConfig, features, manifest: Manifest) -> object:
    """A trained model's normalisation applied to other utterances (another corpus): ``corpus`` with the
    statistics the model recorded, ``speaker`` with each new speaker's own, ``utterance`` per row."""
    normalize = resolve((record or {}).get("normalize"), config.kind)
    if is_identity(normalize, config.kind):
        return features
    frames = row_frames(features, manifest, config)
    if normalize == "corpus":
        corpus = Statistics.from_json(record["corpus"])
        return NormalizedFeatures(features, frames, np.zeros(len(manifest), dtype=np.int64), corpus.mean[None],
                                  corpus.std[None])
    return normalization_for_rows(normalize, config, features, manifest, frames,
                                  np.arange(len(manifest))).features
