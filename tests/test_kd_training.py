"""Teacher outputs store + distillation in training: fold-clean checks and missing outputs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import run_cli

from serkd.data import teacher_outputs
from serkd.io import atomic_write_json, read_json

COMMON = ["--corpus", "synth", "--length", "8000", "--epochs", "1", "--seed", "0"]


@pytest.fixture(scope="module")
def teacher_store(tiny_synth, tmp_path_factory):
    from serkd.cli import main

    out = tmp_path_factory.mktemp("teacher")
    code = main(["teacher", "train", "--model", "lightsernet", *COMMON, "--folds", "0,1", "--root", str(tiny_synth),
                 "--out", str(out)])
    assert code == 0
    return out


def test_teacher_store_covers_every_utterance_with_provenance(teacher_store, tiny_synth):
    assert teacher_outputs.folds_in(teacher_store) == ["spk00", "spk01"]
    outputs = teacher_outputs.read_fold(teacher_store, "spk00")
    assert outputs.logits.shape == (48, 4) and len(set(outputs.utt_ids)) == 48
    meta = outputs.meta
    assert meta["teacher"] == "lightsernet" and meta["provenance"] == "trained" and meta["fold_clean"] is True
    assert meta["test_speakers"] == ["spk00"] and "spk00" not in meta["train_speakers"]
    assert set(meta["train_speakers"]) == {"spk02", "spk03"} and meta["valid_speakers"] == ["spk01"]
    assert meta["labels"] == ["anger", "happiness", "sadness", "neutral"] and len(meta["data_hash"]) == 16


@pytest.mark.parametrize("method", ["kd", "ckd"])
def test_student_distils_from_the_store(teacher_store, tiny_synth, tmp_path, capsys, method):
    argv = ["train", *COMMON, "--folds", "0", "--root", tiny_synth, "--method", method, "--teacher", teacher_store,
            "--out", tmp_path]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    result = read_json(tmp_path / "spk00" / "results.json")
    assert result["method"] == method and result["teacher"] == str(teacher_store) and result["marks"] == []
    assert np.isfinite(result["history"][0]["train_loss"])


def _leaky_copy(teacher_store, tmp_path):
    import shutil

    leaky = tmp_path / "leaky"
    shutil.copytree(teacher_store, leaky)
    meta_path = leaky / "spk00" / teacher_outputs.META
    meta = read_json(meta_path)
    meta["train_speakers"] = [*meta["train_speakers"], "spk00"]
    atomic_write_json(meta_path, meta)
    return leaky


def test_student_refuses_a_teacher_trained_on_its_test_speaker(teacher_store, tiny_synth, tmp_path, capsys):
    leaky = _leaky_copy(teacher_store, tmp_path)
    argv = ["train", *COMMON, "--folds", "0", "--root", tiny_synth, "--method", "kd", "--teacher", leaky,
            "--out", tmp_path / "run"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("serkd: error:")]
    assert "trained on test speaker(s) spk00" in line and "--allow-leaky-teacher" in line
    assert not (tmp_path / "run" / "spk00").exists()

    code, _, err = run_cli([*argv, "--allow-leaky-teacher"], capsys)
    assert code == 0, err
    assert read_json(tmp_path / "run" / "spk00" / "results.json")["marks"] == ["leaky-teacher"]


def test_missing_teacher_output_names_the_utterance(teacher_store, tiny_synth, tmp_path, capsys):
    outputs = teacher_outputs.read_fold(teacher_store, "spk00")
    store = tmp_path / "store"
    teacher_outputs.write_fold(store, "spk00", outputs.utt_ids[1:], outputs.logits[1:], outputs.meta)
    argv = ["train", *COMMON, "--folds", "0", "--root", tiny_synth, "--method", "kd", "--teacher", store,
            "--out", tmp_path / "run"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert f"no teacher output for utterance {outputs.utt_ids[0]!r}" in err
    code, _, err = run_cli([*argv[:-4], "--folds", "1", "--teacher", store, "--out", tmp_path / "run"], capsys)
    assert code == 2 and "missing teacher outputs for fold 'spk01'" in err


def test_kd_without_teacher_is_refused(tiny_synth, tmp_path, capsys):
    code, _, err = run_cli(["train", *COMMON, "--root", tiny_synth, "--method", "ckd", "--out", tmp_path], capsys)
    assert code == 2 and "needs teacher outputs" in err


def test_unknown_method_and_bad_param(tiny_synth, tmp_path, capsys):
    code, _, err = run_cli(["train", *COMMON, "--root", tiny_synth, "--method", "nope", "--out", tmp_path], capsys)
    assert code == 2 and "nope" in err and "Traceback" not in err
    code, _, err = run_cli(["train", *COMMON, "--root", tiny_synth, "--method", "kd", "--method-param", "temp",
                            "--out", tmp_path], capsys)
    assert code == 2 and "key=value" in err


def test_method_params_reach_the_loss_and_the_record(teacher_store, tiny_synth, tmp_path, capsys):
    argv = ["train", *COMMON, "--folds", "0", "--root", tiny_synth, "--method", "kd", "--teacher", teacher_store,
            "--method-param", "temp=4", "--method-param", "alpha=0.9", "--out", tmp_path]
    assert run_cli(argv, capsys)[0] == 0
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["config"]["method_params"] == {"temp": 4, "alpha": 0.9}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "kd", "--method-param", "alpha=abc"], "alpha='abc': expected a number"),
        (["--method", "kd", "--method-param", "standardize=maybe"], "standardize='maybe': expected true or false"),
        (["--batch-size", "0"], "--batch-size: must be at least 1"),
        (["--lr", "-1"], "--lr: must be positive"),
        (["--student", "nosuch"], "unknown model 'nosuch'"),
        (["--method", "kd", "--teacher", "/nonexistent/teacher"], "teacher outputs folder not found"),
    ],
)
def test_bad_options_fail_before_any_work(tiny_synth, tmp_path, capsys, extra, message):
    code, _, err = run_cli(["train", *COMMON, "--root", tiny_synth, *extra, "--out", tmp_path / "run"], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_scientific_notation_param_is_a_number(teacher_store, tiny_synth, tmp_path, capsys):
    argv = ["train", *COMMON, "--folds", "0", "--root", tiny_synth, "--method", "ckd", "--teacher", teacher_store,
            "--method-param", "lambda_1=1e-3", "--out", tmp_path]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "run.json").read_text())["config"]["method_params"] == {"lambda_1": 0.001}


def test_run_folder_refuses_another_config_and_merges_folds(tiny_synth, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(["train", *COMMON, "--folds", "0", "--root", tiny_synth, "--out", out], capsys)[0] == 0
    assert run_cli(["train", *COMMON, "--folds", "1", "--root", tiny_synth, "--out", out], capsys)[0] == 0
    assert [f["name"] for f in read_json(out / "run.json")["folds"]] == ["spk00", "spk01"]
    mask = os.umask(0)
    os.umask(mask)
    assert (out / "run.json").stat().st_mode & 0o777 == 0o666 & ~mask  # as readable as any file, not 0600
    code, _, err = run_cli(["train", *COMMON, "--epochs", "2", "--folds", "2", "--root", tiny_synth, "--out", out],
                           capsys)
    assert code == 2 and "epochs differ" in err
