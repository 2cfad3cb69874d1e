"""Feature kinds (a registry; mel/mfcc bit for bit as before, logmel) and per-fold normalisation (issue 17):
statistics over real frames only, fold-clean (no statistic mixes the test or validation speaker into training
data), the seed's features untouched by default, the config field outside existing hashes."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from serkd.config import ConfigError, RunConfig
from serkd.data.corpora import load_corpus
from serkd.data.features import FEATURE_KINDS, FeatureConfig, compute_features, real_frames
from serkd.data.normalize import (
    NormalizedFeatures,
    fold_normalization,
    frame_mask,
    normalization_for_rows,
    utterance_standardise,
)
from serkd.data.protocol import fold_indices
from serkd.data.statistics import VAR_EPS, Moments
from serkd.data.store import MappedFeatures, feature_store, row_frames
from serkd.errors import SerkdError

# cache keys recorded before feature kinds became a registry
SEED_KEYS = {"mel": "88ff392a7d84", "mfcc": "fdaf4cedc7ea"}


def _seed_features(wave: np.ndarray, kind: str, length: int) -> np.ndarray:
    """The seed presets exactly as serkd computed them before feature kinds became a registry (bytes compared
    in one process: BLAS's thread count changes the last bits, so recorded digests would not travel)."""
    start = max(len(wave) - length, 0) // 2
    x = wave[start:start + length].astype(np.float64)
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.zeros(length, dtype=np.float32)
    padded[:len(x)] = x
    if kind == "mel":
        power = librosa.feature.melspectrogram(y=padded, sr=16000, n_fft=1024, hop_length=256, n_mels=128, power=2.0)
        return librosa.power_to_db(power, ref=np.max).astype(np.float32)
    return librosa.feature.mfcc(y=padded, sr=16000, n_mfcc=40, n_fft=1024, win_length=512, window="hamming",
                                hop_length=128, n_mels=128, fmax=8000.0).astype(np.float32)


def test_seed_features_and_cache_keys_are_bit_identical():
    rng = np.random.default_rng(42)
    for n in (5000, 16000, 30001):
        t = np.arange(n) / 16000
        wave = (0.3 * np.sin(2 * np.pi * 180 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)
        for kind in ("mel", "mfcc"):
            features = compute_features(wave, FeatureConfig(kind, 16000))
            assert np.array_equal(features, _seed_features(wave, kind, 16000)), (n, kind)
    assert {kind: FeatureConfig(kind, 16000).key() for kind in SEED_KEYS} == SEED_KEYS


def test_feature_kinds_are_a_registry_with_their_defaults():
    assert FEATURE_KINDS.available() == ["mel", "mfcc", "logmel"]
    assert [FEATURE_KINDS.get(k).default_normalize for k in ("mel", "mfcc", "logmel")] == ["utterance"] * 2 + [
        "corpus"]
    with pytest.raises(SerkdError, match=r"unknown feature kind 'mell'.*logmel"):
        FeatureConfig("mell", 8000)
    import dataclasses

    choices = {f.name: f.metadata["choices"] for f in dataclasses.fields(RunConfig)}
    assert choices["features"]() == ["mel", "mfcc", "logmel"]  # the CLI's --features reads the registry
    assert choices["normalize"]() == ["utterance", "speaker", "corpus", "none"]


def test_logmel_is_log_mel_of_the_raw_waveform_with_real_frames():
    rng = np.random.default_rng(0)
    wave = (0.2 * rng.standard_normal(5000)).astype(np.float32)
    config = FeatureConfig("logmel", 8000)
    padded = np.pad(wave, (0, 3000))
    reference = np.log(librosa.feature.melspectrogram(y=padded, sr=16000, n_fft=1024, hop_length=256, n_mels=128)
                       + np.float32(1e-6))
    np.testing.assert_allclose(compute_features(wave, config), reference, rtol=1e-5, atol=1e-5)
    assert compute_features(wave, config).shape == config.shape() == (128, 32)
    # frames centred on real samples: ceil(n / hop), capped by the crop; whole: no cap
    assert list(real_frames(np.array([1, 256, 257, 5000, 8000, 20000]), config)) == [1, 1, 2, 20, 32, 32]
    assert real_frames(20000, config, whole=True) == 79


@pytest.fixture(scope="module")
def logmel_store(tiny_synth):
    manifest = load_corpus("synth", tiny_synth)
    config = FeatureConfig("logmel", 16000)  # 1 s: the 0.5-1 s clips end in padding of different lengths
    features, kept, _ = feature_store(manifest, config)
    return features, kept, config


def _real_moments(rows: np.ndarray, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per bin over real frames, by brute force."""
    values = np.concatenate([row[:, :f] for row, f in zip(rows, frames)], axis=1).astype(np.float64)
    return values.mean(1), np.sqrt(values.var(1) + VAR_EPS)


def test_statistics_count_real_frames_only(logmel_store):
    features, manifest, config = logmel_store
    frames = row_frames(features, manifest, config)
    assert frames.min() >= 32 and frames.max() <= 63 and len(set(frames.tolist())) > 10
    assert frames.tolist() == [int(np.ceil(min(sf.info(str(u.path)).frames, 16000) / 256))
                               for u in manifest.utterances]
    fold = manifest.folds[0]
    parts = fold_indices(manifest, fold)
    norm = fold_normalization("corpus", config, features, manifest, parts["train"])
    rows = np.asarray(features.array)
    mean, std = _real_moments(rows[parts["train"]], frames[parts["train"]])
    np.testing.assert_allclose(norm.record["corpus"]["mean"], mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm.record["corpus"]["std"], std, rtol=1e-5)
    # padding (log 1e-6 = -13.8) never enters: standardised real frames of the training rows have mean 0, std 1
    x = norm.features[parts["train"]][:, 0].numpy()
    real = np.concatenate([row[:, :f] for row, f in zip(x, frames[parts["train"]])], axis=1)
    np.testing.assert_allclose(real.mean(1), 0, atol=1e-4)
    np.testing.assert_allclose(real.std(1), 1, atol=1e-3)


def test_normalisation_is_fold_clean(logmel_store):
    """Corpus statistics come from the training speakers only; a speaker's statistics from that speaker only:
    changing every test and validation utterance changes no normalised training row."""
    features, manifest, config = logmel_store
    frames = row_frames(features, manifest, config)
    fold = manifest.folds[0]
    parts = fold_indices(manifest, fold)
    rows = np.asarray(features.array).copy()
    changed = rows.copy()
    held_out = np.concatenate([parts["valid"], parts["test"]])
    changed[held_out] = changed[held_out] * 3.0 + 5.0
    for normalize in ("corpus", "speaker", "utterance"):
        a = normalization_for_rows(normalize, config, MappedFeatures(rows), manifest, frames, parts["train"])
        b = normalization_for_rows(normalize, config, MappedFeatures(changed), manifest, frames, parts["train"])
        assert torch.equal(a.features[parts["train"]], b.features[parts["train"]]), normalize
        if normalize == "corpus":
            assert a.record["corpus"]["speakers"] == list(fold.train)
            # the held-out rows are standardised with the training speakers' statistics, unchanged
            assert a.record["corpus"] == b.record["corpus"]
    # speaker: each speaker by its own statistics; the test speaker's from its own audio only
    test_speaker = fold.test[0]
    own = np.array([i for i, u in enumerate(manifest.utterances) if u.speaker == test_speaker])
    norm = normalization_for_rows("speaker", config, MappedFeatures(rows), manifest, frames, parts["train"],
                                  report_speakers=fold.test)
    mean, std = _real_moments(rows[own], frames[own])
    np.testing.assert_allclose(norm.record["speakers"][test_speaker]["mean"], mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm.record["speakers"][test_speaker]["std"], std, rtol=1e-5)
    others = rows.copy()
    others[parts["train"]] += 7.0
    again = normalization_for_rows("speaker", config, MappedFeatures(others), manifest, frames, parts["train"])
    assert torch.equal(norm.features[own], again.features[own])


def test_seed_features_pass_through_untouched_by_default(tiny_synth):
    manifest = load_corpus("synth", tiny_synth)
    for kind in ("mel", "mfcc"):
        config = FeatureConfig(kind, 8000)
        features, kept, _ = feature_store(manifest, config)
        norm = fold_normalization(None, config, features, kept, np.arange(10))
        assert norm.normalize == "utterance" and norm.features is features  # the very store: bit for bit
        assert fold_normalization("none", config, features, kept, np.arange(10)).features is features
        speaker = fold_normalization("speaker", config, features, kept, np.arange(10))
        assert isinstance(speaker.features, NormalizedFeatures)


def test_utterance_standardises_each_row_over_its_real_frames():
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.normal(-4, 2, (3, 5, 20)).astype(np.float32))
    frames = torch.tensor([20, 7, 1])
    x[1, :, 7:] = np.log(1e-6)  # padding
    out = utterance_standardise(x, frame_mask(frames, 20))
    np.testing.assert_allclose(out[0].mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(out[1, :, :7].mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(out[1, :, :7].std(-1, unbiased=False), 1, atol=1e-4)
    assert torch.isfinite(out).all()  # one real frame: variance 0, divided by sqrt(VAR_EPS)
    wrapped = NormalizedFeatures(MappedFeatures(x.numpy()), frames.numpy(), per_utterance=True)
    assert torch.equal(wrapped[np.array([2, 1])][:, 0], out[[2, 1]])
    assert wrapped[1].shape == (1, 5, 20) and torch.equal(wrapped[1][0], out[1])


def test_moments_add_up_to_the_statistics_of_the_union():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(4, 30)), rng.normal(2, 3, size=(4, 50))
    stats = (Moments(30, a.sum(1), (a * a).sum(1)) + Moments(50, b.sum(1), (b * b).sum(1))).statistics()
    both = np.concatenate([a, b], axis=1)
    np.testing.assert_allclose(stats.mean, both.mean(1), rtol=1e-6)
    np.testing.assert_allclose(stats.std, np.sqrt(both.var(1) + VAR_EPS), rtol=1e-6)
    assert stats.frames == 80


def test_config_field_normalize_keeps_existing_hashes():
    base = RunConfig(corpus="synth", root="r", out="o")
    assert "normalize" not in base.hashed_dict()  # runs made before the field keep their fold keys
    assert base.config_hash() == RunConfig(corpus="synth", root="r", out="o", normalize=None).config_hash()
    assert RunConfig(corpus="synth", root="r", out="o", normalize="speaker").config_hash() != base.config_hash()
    with pytest.raises(ConfigError, match="normalize: must be one of utterance, speaker, corpus, none"):
        RunConfig(corpus="synth", root="r", out="o", normalize="global").validate()


def test_a_trained_models_normalisation_applies_to_another_corpus(logmel_store):
    """serkd eval: corpus statistics as the model recorded them; speaker statistics of each new speaker."""
    from serkd.data.normalize import for_checkpoint

    features, manifest, config = logmel_store
    frames = row_frames(features, manifest, config)
    recorded = {"normalize": "corpus", "corpus": {"mean": [1.0] * 128, "std": [2.0] * 128, "frames": 5}}
    wrapped = for_checkpoint(recorded, config, features, manifest)
    torch.testing.assert_close(wrapped[np.array([3])], (features[np.array([3])] - 1.0) / 2.0)
    by_speaker = for_checkpoint({"normalize": "speaker"}, config, features, manifest)
    own = np.array([i for i, u in enumerate(manifest.utterances) if u.speaker == "spk01"])
    x = by_speaker[own][:, 0].numpy()
    real = np.concatenate([row[:, :f] for row, f in zip(x, frames[own])], axis=1)
    np.testing.assert_allclose(real.mean(1), 0, atol=1e-4)
    assert for_checkpoint(None, FeatureConfig("mel", 8000), features, manifest) is features
