"""Feature KD in training: a CNN teacher stores its penultimate embeddings, students distil from them with
fitnet / pkt / sp / rkd_emb, and a logit-only store is refused in one line before any feature is computed."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli

from serkd.data import teacher_outputs
from serkd.io import read_json

COMMON = ["--corpus", "synth", "--length", "8000", "--epochs", "1", "--folds", "0", "--seed", "2"]


@pytest.fixture(scope="module")
def cnn_store(tiny_synth, tmp_path_factory):
    from serkd.cli import main

    out = tmp_path_factory.mktemp("cnn-teacher")
    assert main(["teacher", "train", "--model", "lightsernet", *COMMON, "--root", str(tiny_synth),
                 "--out", str(out)]) == 0
    return out


def test_cnn_teacher_stores_penultimate_embeddings(cnn_store):
    outputs = teacher_outputs.read_fold(cnn_store, "spk00")
    assert outputs.embeddings.shape == (48, 320) and outputs.meta["embedding_dim"] == 320
    assert np.isfinite(outputs.embeddings).all() and outputs.embeddings.std() > 0


@pytest.mark.parametrize("method", ["fitnet", "pkt", "sp", "rkd_emb"])
def test_student_distils_teacher_embeddings(cnn_store, tiny_synth, tmp_path, capsys, method):
    argv = ["train", *COMMON, "--root", tiny_synth, "--method", method, "--teacher", cnn_store,
            "--out", tmp_path / method]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    result = read_json(tmp_path / method / "spk00" / "results.json")
    assert result["method"] == method and np.isfinite(result["history"][0]["train_loss"])
    assert result["teacher"] == str(cnn_store)


def test_feature_loss_changes_training(cnn_store, tiny_synth, tmp_path, capsys):
    for method in ("ce", "sp"):
        extra = ["--teacher", cnn_store] if method == "sp" else []
        assert run_cli(["train", *COMMON, "--root", tiny_synth, "--method", method, *extra,
                        "--out", tmp_path / method], capsys)[0] == 0
    losses = [read_json(tmp_path / m / "spk00" / "results.json")["history"][0]["train_loss"] for m in ("ce", "sp")]
    assert losses[0] != losses[1]


def test_logit_only_store_is_refused_in_one_line(cnn_store, tiny_synth, tmp_path, capsys):
    outputs = teacher_outputs.read_fold(cnn_store, "spk00")
    logits_only = tmp_path / "logits-only"
    teacher_outputs.write_fold(logits_only, "spk00", outputs.utt_ids, outputs.logits, outputs.meta)
    argv = ["train", *COMMON, "--root", tiny_synth, "--method", "pkt", "--teacher", logits_only,
            "--out", tmp_path / "run"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"serkd: error: {logits_only / 'spk00'}: teacher outputs have no embeddings")
    assert "features:" not in err and not (tmp_path / "run").exists()
