from __future__ import annotations

import hashlib
import shutil

import librosa
import numpy as np
import pytest
import soundfile as sf

from serkd.data.corpora import load_corpus
from serkd.data.features import FeatureConfig, compute_features, crop_normalise_pad, feature_matrix
from serkd.data.protocol import Fold, leave_groups_out, pick_folds, select_on_test
from serkd.data.synth import SynthConfig, generate
from serkd.errors import SerkdError


def _digest(folder):
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.wav"))}


def test_synth_is_deterministic_by_seed(tmp_path):
    config = SynthConfig(speakers=3, per_class=1, seed=7, min_seconds=0.3, max_seconds=0.5)
    generate(tmp_path / "a", config)
    generate(tmp_path / "b", config)
    generate(tmp_path / "c", SynthConfig(speakers=3, per_class=1, seed=8, min_seconds=0.3, max_seconds=0.5))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    assert len(_digest(tmp_path / "a")) == 3 * 4


def test_synth_audio_format_and_manifest(tiny_synth):
    manifest = load_corpus("synth", tiny_synth)
    assert len(manifest) == 4 * 4 * 3
    assert manifest.labels == ["anger", "happiness", "sadness", "neutral"]
    assert manifest.speakers == ["spk00", "spk01", "spk02", "spk03"]
    info = sf.info(str(manifest.utterances[0].path))
    assert (info.samplerate, info.channels) == (16000, 1)
    durations = [u.duration for u in manifest.utterances]
    assert min(durations) >= 0.5 and max(durations) <= 1.0 and len(set(durations)) > 10


def test_folds_never_share_a_speaker(tiny_synth):
    manifest = load_corpus("synth", tiny_synth)
    assert len(manifest.folds) == 4
    for fold in manifest.folds:
        test, valid, train = set(fold.test), set(fold.valid), set(fold.train)
        assert test and valid and train
        assert not (test & valid) and not (test & train) and not (valid & train)
        assert test | valid | train == set(manifest.speakers)
    assert manifest.folds[0].test == ("spk00",) and manifest.folds[0].valid == ("spk01",)
    assert manifest.folds[3].valid == ("spk00",)  # the rule is cyclic


def test_fold_rejects_overlap_and_test_selection_is_marked():
    with pytest.raises(SerkdError, match="two of train/valid/test"):
        Fold("bad", ("a",), ("b",), ("b", "c"))
    folds = select_on_test(leave_groups_out([["a"], ["b"], ["c"], ["d"]]))
    assert folds[0].selection == "test" and folds[0].valid == folds[0].test == ("a",)
    assert set(folds[0].train) == {"b", "c", "d"}
    assert [f.name for f in pick_folds(folds, "1,d")] == ["b", "d"]  # folds are named after their test speakers
    named = leave_groups_out([["s1", "s2"], ["3"], ["s4"]], group_names=["A", "B", "C"])
    assert [f.name for f in named] == ["s1+s2", "spk3", "s4"]
    assert [f.name for f in pick_folds(named, "B,s4")] == ["spk3", "s4"]  # or after their group
    with pytest.raises(SerkdError, match="unknown fold"):
        pick_folds(folds, "9")


def _librosa_reference(wave, kind, length):
    x = wave[(len(wave) - length) // 2:][:length] if len(wave) > length else wave
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    x = np.pad(x, (0, length - len(x)))
    if kind == "mel":
        s = librosa.feature.melspectrogram(y=x, sr=16000, n_fft=1024, hop_length=256, n_mels=128)
        return librosa.power_to_db(s, ref=np.max)
    return librosa.feature.mfcc(y=x, sr=16000, n_mfcc=40, n_fft=1024, win_length=512, window="hamming",
                                hop_length=128, n_mels=128, fmax=8000)


@pytest.mark.parametrize("kind", ["mel", "mfcc"])
@pytest.mark.parametrize("n_samples", [9000, 20000])  # shorter (padded) and longer (cropped) than L
def test_features_match_librosa(kind, n_samples):
    rng = np.random.default_rng(0)
    t = np.arange(n_samples) / 16000
    wave = (np.sin(2 * np.pi * 220 * t) + 0.1 * rng.standard_normal(n_samples)).astype(np.float64)
    config = FeatureConfig(kind, length=16000)
    ours = compute_features(wave.astype(np.float32), config)
    reference = _librosa_reference(wave, kind, 16000)
    assert ours.shape == reference.shape == ((128, 63) if kind == "mel" else (40, 126))
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-3)


def test_seed_mel_shape_for_five_seconds():
    assert FeatureConfig("mel", 80000).shape() == (128, 313)


def test_crop_is_centred_and_normalised_over_real_samples():
    wave = np.arange(10, dtype=np.float32)
    out = crop_normalise_pad(wave, 4)
    kept = np.arange(3, 7, dtype=np.float64)
    np.testing.assert_allclose(out, (kept - kept.mean()) / np.sqrt(kept.var() + 1e-7), rtol=1e-6)
    padded = crop_normalise_pad(np.array([1.0, 3.0], dtype=np.float32), 5)
    np.testing.assert_allclose(padded, [-1, 1, 0, 0, 0], atol=1e-6)


def test_feature_cache_second_run_computes_nothing(tiny_synth, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_synth, corpus)
    manifest = load_corpus("synth", corpus)
    config = FeatureConfig("mel", 8000)
    first, _, cache1 = feature_matrix(manifest, config)
    assert (cache1.computed, cache1.reused) == (len(manifest), 0)
    second, _, cache2 = feature_matrix(load_corpus("synth", corpus), config)
    assert (cache2.computed, cache2.reused) == (0, len(manifest))
    np.testing.assert_array_equal(first, second)
    # another config is another cache entry; changed audio is recomputed
    _, _, cache3 = feature_matrix(manifest, FeatureConfig("mfcc", 8000))
    assert cache3.computed == len(manifest)
    path = manifest.utterances[0].path
    wave, rate = sf.read(path)
    sf.write(path, wave[::-1].copy(), rate)
    _, _, cache4 = feature_matrix(load_corpus("synth", corpus), config)
    assert (cache4.computed, cache4.reused) == (1, len(manifest) - 1)
