"""The WavLM teacher: fine-tuned per fold (a tiny random-init WavLM loaded offline), outputs for every
utterance, fold-clean metadata a student checks, caching, and one-line errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import run_cli

from serkd.data import teacher_outputs
from serkd.data.corpora import load_corpus
from serkd.io import atomic_write_json, read_json
from serkd.models.wavlm_teacher import TINY_NOTE, write_tiny

FOLDS = ("spk00", "spk01")
# a random-init encoder learns from scratch: train it too, at a from-scratch learning rate
TEACHER = ["teacher", "train", "--corpus", "synth", "--folds", "0,1", "--epochs", "10", "--length", "16000",
           "--batch-size", "4", "--grad-accum", "2", "--lr", "3e-3", "--head-lr", "3e-3", "--train-feature-encoder",
           "--seed", "0"]


@pytest.fixture(scope="module")
def tiny_wavlm(tmp_path_factory):
    return write_tiny(tmp_path_factory.mktemp("tiny-wavlm"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from serkd.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth6")
    generate(root, SynthConfig(speakers=5, per_class=6, seed=0, min_seconds=1.0, max_seconds=1.5))
    return root


@pytest.fixture(scope="module")
def store(tiny_wavlm, corpus, tmp_path_factory):
    from serkd.cli import main

    out = tmp_path_factory.mktemp("teacher")
    assert main([*TEACHER, "--model", str(tiny_wavlm), "--root", str(corpus), "--out", str(out)]) == 0
    return out


def test_teacher_learns_above_chance(store):
    results = [read_json(store / fold / "results.json") for fold in FOLDS]
    assert all(r["history"][-1]["train_loss"] < r["history"][0]["train_loss"] for r in results)
    uas = [r["ua"] for r in results]
    assert np.mean(uas) > 0.375, uas  # chance is 0.25 (4 balanced classes)
    assert all(r["student"] == TINY_NOTE and r["method"] == "teacher" for r in results)


def test_outputs_cover_every_utterance_of_every_fold(store, corpus, tiny_wavlm):
    manifest = load_corpus("synth", corpus)
    assert teacher_outputs.folds_in(store) == list(FOLDS)
    for fold in FOLDS:
        outputs = teacher_outputs.read_fold(store, fold)
        assert sorted(outputs.utt_ids) == sorted(u.utt_id for u in manifest.utterances)
        assert outputs.logits.shape == (len(manifest), 4) and np.isfinite(outputs.logits).all()
        # every hidden state's frame mean (CNN output + 2 layers, hidden 32) and the classifier's input
        assert outputs.embeddings.shape == (len(manifest), 3, 32) and outputs.embeddings.dtype == np.float16
        assert outputs.pooled.shape == (len(manifest), 32)  # the tiny config's classifier_proj_size
        assert len(outputs.meta["layer_weights"]) == outputs.meta["embedding_layers"] == 3
        weighted = teacher_outputs.embedding_matrix(outputs, None, store / fold)
        assert weighted.shape == (len(manifest), 32) and weighted.dtype == np.float32
        meta = outputs.meta
        test = meta["test_speakers"]
        assert meta["provenance"] == "trained" and meta["fold_clean"] is True
        assert meta["teacher"] == TINY_NOTE and meta["model_id"] == str(tiny_wavlm)
        assert meta["revision"].startswith("local-") and len(meta["config_hash"]) == 16
        assert not set(test) & set(meta["train_speakers"]) and not set(test) & set(meta["valid_speakers"])
        assert meta["data_hash"] == manifest.data_hash() and 0 <= meta["valid_ua"] <= 1
        assert meta["labels"] == manifest.labels


def test_report_reads_the_teacher_store(store, capsys):
    code, out, _ = run_cli(["report", store, "--json"], capsys)
    assert code == 0
    (summary,) = json.loads(out)["summary"]
    assert summary["n_folds"] == 2 and summary["student"] == TINY_NOTE and summary["method"] == "teacher"


def test_second_run_with_the_same_config_trains_nothing(store, corpus, tiny_wavlm, tmp_path, capsys):
    again = tmp_path / "again"
    shutil.copytree(store, again)
    before = {p: p.read_bytes() for p in again.rglob("outputs.*")}
    code, _, err = run_cli([*TEACHER, "--model", tiny_wavlm, "--root", corpus, "--out", again], capsys)
    assert code == 0, err
    for fold in FOLDS:
        assert f"fold {fold}: cached (same config and data)" in err
    assert {p: p.read_bytes() for p in again.rglob("outputs.*")} == before
    # another config for one fold: that fold is trained again, the other is still reused
    code, _, err = run_cli([*TEACHER, "--epochs", "1", "--folds", "0", "--model", tiny_wavlm, "--root", corpus,
                            "--out", again], capsys)
    assert code == 0 and "cached" not in err
    assert read_json(again / "spk00" / "results.json")["epochs"] == 1


def test_student_distils_from_it_and_refuses_it_when_it_heard_the_test_speaker(store, corpus, tmp_path, capsys):
    student = ["train", "--corpus", "synth", "--root", corpus, "--folds", "0", "--epochs", "1", "--length", "8000",
               "--method", "kd"]
    code, _, err = run_cli([*student, "--teacher", store, "--out", tmp_path / "ok"], capsys)
    assert code == 0, err
    leaky = tmp_path / "leaky"
    shutil.copytree(store, leaky)
    meta = read_json(leaky / "spk00" / teacher_outputs.META)
    meta["train_speakers"] = [*meta["train_speakers"], "spk00"]  # as if fine-tuned with the test speaker
    atomic_write_json(leaky / "spk00" / teacher_outputs.META, meta)
    code, _, err = run_cli([*student, "--teacher", leaky, "--out", tmp_path / "refused"], capsys)
    assert code == 2 and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("serkd: error:")]
    assert "trained on test speaker(s) spk00" in line
    assert not (tmp_path / "refused" / "spk00").exists()


def _one_error_line(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert any(line.startswith("serkd: error:") and all(n in line for n in needles) for line in lines), err
    assert "Traceback" not in err


def test_missing_weights_offline_is_one_line(tiny_synth, tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))  # nothing cached, for sure
    code, _, err = run_cli(["teacher", "train", "--model", "microsoft/wavlm-base-plus", "--corpus", "synth",
                            "--root", tiny_synth, "--out", tmp_path / "out"], capsys)
    assert code == 2
    _one_error_line(err, "serkd: error: microsoft/wavlm-base-plus: weights not found locally and the hub is offline")
    assert not (tmp_path / "out").exists()


def test_folder_without_config_and_wavlm_options_on_a_cnn_are_one_line(tiny_synth, tmp_path, capsys):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    common = ["teacher", "train", "--corpus", "synth", "--root", tiny_synth, "--out", tmp_path / "out"]
    code, _, err = run_cli([*common, "--model", empty], capsys)
    assert code == 2
    _one_error_line(err, str(empty), "no config.json")
    code, _, err = run_cli([*common, "--model", "lightsernet", "--grad-accum", "2"], capsys)
    assert code == 2
    _one_error_line(err, "--grad-accum: applies to WavLM teachers only")


def test_bad_audio_is_collected_and_skippable(tiny_synth, tiny_wavlm, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_synth, corpus)
    bad = sorted((corpus / "wav" / "spk01").glob("*.wav"))[1]
    import soundfile as sf

    sf.write(bad, np.zeros(8000, dtype=np.float32), 16000)  # readable header: found when the audio is loaded
    argv = ["teacher", "train", "--model", tiny_wavlm, "--corpus", "synth", "--root", corpus, "--folds", "0",
            "--epochs", "1", "--length", "8000", "--out", tmp_path / "out"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    _one_error_line(err, bad.name, "all zeros")
    code, _, err = run_cli([*argv, "--skip-bad"], capsys)
    assert code == 0, err
    assert "skipped 1 bad" in err
    assert len(teacher_outputs.read_fold(tmp_path / "out", "spk00").utt_ids) == 47


def test_cnn_teacher_is_cached_too(tiny_synth, tmp_path, capsys):
    argv = ["teacher", "train", "--model", "lightsernet", "--corpus", "synth", "--root", tiny_synth, "--folds", "0",
            "--epochs", "1", "--length", "8000", "--out", tmp_path / "cnn"]
    assert run_cli(argv, capsys)[0] == 0
    code, _, err = run_cli(argv, capsys)
    assert code == 0 and "fold spk00: cached (same config and data)" in err


def test_feature_kd_from_a_layer_of_the_wavlm_store(store, corpus, tmp_path, capsys):
    argv = ["train", "--corpus", "synth", "--root", corpus, "--folds", "0", "--epochs", "1", "--length", "8000",
            "--method", "fitnet", "--method-param", "teacher_layer=1", "--teacher", store, "--out", tmp_path / "f"]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    result = read_json(tmp_path / "f" / "spk00" / "results.json")
    assert result["method"] == "fitnet" and result["method_params"] == {"teacher_layer": 1}
