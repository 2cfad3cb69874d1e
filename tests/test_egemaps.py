"""The eGeMAPS + logistic-regression teacher: fold-clean, cached, 88 features, usable for KD."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("opensmile")
pytest.importorskip("sklearn")

from serkd.config import ConfigError, RunConfig, TeacherConfig
from serkd.data import teacher_outputs
from serkd.data.corpora import load_corpus
from serkd.data.protocol import fold_indices
from serkd.train.teachers import egemaps as teacher_egemaps
from serkd.train.teachers import teacher_kind, train_teacher

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def store(tiny_synth, tmp_path_factory):
    """The teacher of folds 0 and 1, with its own feature cache (``cache``: tests reuse it)."""
    out, cache = tmp_path_factory.mktemp("egemaps"), tmp_path_factory.mktemp("egemaps-cache")
    config = TeacherConfig(model="egemaps", corpus="synth", root=str(tiny_synth), out=str(out), folds="0,1",
                           c_grid="0.01,1")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SERKD_CACHE", str(cache))
        results = train_teacher(config)
    return out, config, results, cache


def test_outputs_cover_every_utterance_with_88_standardised_features(store, tiny_synth):
    out, config, results, _ = store
    manifest = load_corpus("synth", tiny_synth)
    assert teacher_kind(config) == "egemaps"
    for result in results:
        outputs = teacher_outputs.read_fold(out, result.fold)
        assert outputs.utt_ids == [u.utt_id for u in manifest.utterances]
        assert outputs.logits.shape == (len(manifest), len(manifest.labels))
        assert np.isfinite(outputs.logits).all()
        assert np.allclose(np.exp(outputs.logits).sum(axis=1), 1, atol=1e-4)  # log-probabilities
        assert outputs.embeddings.shape == (len(manifest), 88) and outputs.meta["embedding_dim"] == 88
        assert len(outputs.meta["audio_sha1"]) == len(manifest) and outputs.meta["data_hash"] == manifest.data_hash()
        saved = json.loads((out / result.fold / "results.json").read_text())
        assert (saved["role"], saved["method"], saved["student"]) == ("teacher", "teacher", "egemaps+logreg")
        assert saved["C"] in (0.01, 1.0) and len(saved["history"]) == 2


def test_fold_clean_fit_on_the_training_speakers_only(store, tiny_synth, monkeypatch):
    out, _, _, cache = store
    monkeypatch.setenv("SERKD_CACHE", str(cache))
    manifest = load_corpus("synth", tiny_synth)
    features, _, _ = teacher_egemaps.egemaps_matrix(manifest)
    targets = manifest.label_ids()
    for fold in manifest.folds[:2]:
        meta = teacher_outputs.read_meta(out, fold.name)
        assert meta["train_speakers"] == list(fold.train) and meta["fold_clean"] is True
        assert not set(fold.test) & set(meta["train_speakers"]) and not teacher_outputs.leak_meta(meta, fold.test)
        parts = fold_indices(manifest, fold)
        assert not {manifest.utterances[i].speaker for i in parts["train"]} & set(fold.test)
        # refitting on exactly the training speakers' utterances reproduces the stored logits
        model, _, _ = teacher_egemaps.fit_fold(features, targets, parts, [meta["C"]])
        assert np.allclose(teacher_egemaps.log_probabilities(model, features),
                           teacher_outputs.read_fold(out, fold.name).logits, atol=1e-4)


def test_rerun_computes_no_features_and_fits_nothing(store, monkeypatch):
    _, config, results, cache = store
    monkeypatch.setenv("SERKD_CACHE", str(cache))

    def refuse(*args, **kwargs):
        raise AssertionError("a cached fold was refitted")

    monkeypatch.setattr(teacher_egemaps, "fit_fold", refuse)
    events = []
    again = train_teacher(config, events.append)
    assert [r.ua for r in again] == [r.ua for r in results]
    assert any(e.message.startswith("eGeMAPS: 0 computed") for e in events)
    assert sum(1 for e in events if e.kind == "fold_done" and e.data["cached"]) == 2


def test_options_that_do_not_apply_are_refused():
    base = {"model": "egemaps", "corpus": "synth", "root": "r", "out": "o"}
    for field, value in (("epochs", 3), ("features", "mfcc"), ("length", 8000), ("head_lr", 1e-3)):
        with pytest.raises(ConfigError, match=field):
            TeacherConfig(**base, **{field: value}).validate()
    with pytest.raises(ConfigError, match="c_grid"):
        TeacherConfig(**base, c_grid="1,x").validate()
    with pytest.raises(ConfigError, match="c_grid"):
        TeacherConfig(**{**base, "model": "lightsernet"}, c_grid="1").validate()


@pytest.mark.parametrize("method", ["kd"])
def test_students_distil_from_the_egemaps_teacher(store, tiny_synth, tmp_path, method):
    from serkd.train.run import run

    out, _, _, _ = store
    results = run(RunConfig(corpus="synth", root=str(tiny_synth), folds="0", epochs=1, length=8000, method=method,
                            teacher=str(out), out=str(tmp_path / method), recipe="strong", mixup=0.2))
    assert results[0].teacher == str(out) and not results[0].marks


def test_crossfit_gives_training_speakers_out_of_speaker_outputs(store, tiny_synth, tmp_path, monkeypatch):
    out, config, _, cache = store
    monkeypatch.setenv("SERKD_CACHE", str(cache))
    crossfit = config.replace(out=str(tmp_path / "crossfit"), folds="0", crossfit=True)
    train_teacher(crossfit)
    manifest = load_corpus("synth", tiny_synth)
    features, _, _ = teacher_egemaps.egemaps_matrix(manifest)
    fold = manifest.folds[0]
    parts = fold_indices(manifest, fold)
    stored = teacher_outputs.read_fold(tmp_path / "crossfit", fold.name)
    in_sample = teacher_outputs.read_fold(out, fold.name)
    assert stored.meta["crossfit"] is True and stored.meta["train_speakers"] == list(fold.train)
    held_speaker = fold.train[0]
    held = [i for i in parts["train"] if manifest.utterances[i].speaker == held_speaker]
    rest = [i for i in parts["train"] if manifest.utterances[i].speaker != held_speaker]
    model, _, _ = teacher_egemaps.fit_fold(features, manifest.label_ids(), {"train": rest, "valid": rest},
                                           [stored.meta["C"]])
    assert np.allclose(stored.logits[held], teacher_egemaps.log_probabilities(model, features[held]), atol=1e-4)
    others = np.setdiff1d(np.arange(len(manifest)), parts["train"])  # validation and test: the full model's
    assert np.allclose(stored.logits[others], in_sample.logits[others], atol=1e-4)
    assert not np.allclose(stored.logits[held], in_sample.logits[held], atol=1e-3)
