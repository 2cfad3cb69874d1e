from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import run_cli

from serkd.data.corpora import load_corpus
from serkd.data.features import FeatureConfig, feature_matrix
from serkd.train.checkpoint import load_checkpoint

TRAIN = ["train", "--corpus", "synth", "--length", "8000", "--epochs", "2", "--folds", "0,1", "--seed", "3"]


@pytest.fixture(scope="module")
def trained_run(tiny_synth, tmp_path_factory):
    from serkd.cli import main

    out = tmp_path_factory.mktemp("run")
    assert main([*TRAIN, "--root", str(tiny_synth), "--out", str(out)]) == 0
    return out


def test_train_writes_checkpoints_results_and_provenance(trained_run, tiny_synth):
    run = json.loads((trained_run / "run.json").read_text())
    assert run["config"]["method"] == "ce" and run["config"]["epochs"] == 2
    assert run["features"]["kind"] == "mel" and run["features"]["length"] == 8000
    assert len(run["data_hash"]) == 16 and run["provenance"]["git_commit"]
    assert run["provenance"]["versions"]["torch"].startswith("2.14.1")
    assert [f["name"] for f in run["folds"]] == ["spk00", "spk01"]
    for fold in ("spk00", "spk01"):
        folder = trained_run / fold
        result = json.loads((folder / "results.json").read_text())
        assert 0 <= result["wa"] <= 1 and 0 <= result["ua"] <= 1
        assert result["n_test"] == 12 and result["n_valid"] == 12 and result["n_train"] == 24
        assert result["selection"] == "valid" and result["marks"] == []
        assert len(result["history"]) == 2 and 1 <= result["best_epoch"] <= 2
        assert np.array(result["confusion"]).sum() == 12
        assert (folder / "model.safetensors").is_file()
        assert not list(folder.glob(".*tmp"))


def test_checkpoint_reloads_to_the_same_predictions(trained_run, tiny_synth):
    model, meta = load_checkpoint(trained_run / "spk00")
    assert meta["labels"] == ["anger", "happiness", "sadness", "neutral"]
    manifest = load_corpus("synth", tiny_synth)
    features, manifest, _ = feature_matrix(manifest, FeatureConfig("mel", 8000))
    test_idx = [i for i, u in enumerate(manifest.utterances) if u.speaker == "spk00"]
    with torch.no_grad():
        predictions = model(torch.from_numpy(features[test_idx]).unsqueeze(1)).argmax(1).numpy()
    targets = manifest.label_ids()[test_idx]
    result = json.loads((trained_run / "spk00" / "results.json").read_text())
    assert np.mean(predictions == targets) == pytest.approx(result["wa"])


def test_report_json_shape(trained_run, capsys):
    code, out, _ = run_cli(["report", trained_run, "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert [r["fold"] for r in report["rows"]] == ["spk00", "spk01"]
    assert {"fold", "test", "wa", "ua", "student", "method", "features"} <= set(report["rows"][0])
    (summary,) = report["summary"]
    assert summary["n_folds"] == 2
    assert summary["wa_mean"] == pytest.approx(np.mean([r["wa"] for r in report["rows"]]))
    assert summary["ua_std"] == pytest.approx(np.std([r["ua"] for r in report["rows"]]))
    code, out, _ = run_cli(["report", trained_run], capsys)
    assert "mean ± std" in out and "spk01" in out


def test_same_seed_same_results(trained_run, tiny_synth, tmp_path, capsys):
    code, _, _ = run_cli([*TRAIN, "--folds", "0", "--root", tiny_synth, "--out", tmp_path / "again"], capsys)
    assert code == 0
    first = json.loads((trained_run / "spk00" / "results.json").read_text())
    again = json.loads((tmp_path / "again" / "spk00" / "results.json").read_text())
    assert [h["train_loss"] for h in again["history"]] == [h["train_loss"] for h in first["history"]]
    assert (again["wa"], again["ua"]) == (first["wa"], first["ua"])


def test_select_test_marks_results(tiny_synth, tmp_path, capsys):
    argv = [*TRAIN, "--epochs", "1", "--folds", "0", "--select", "test", "--root", tiny_synth, "--out", tmp_path]
    assert run_cli(argv, capsys)[0] == 0
    result = json.loads((tmp_path / "spk00" / "results.json").read_text())
    assert result["marks"] == ["test-selected"] and result["valid"] == result["test"] == ["spk00"]
    assert result["n_train"] == 36


def test_corpus_json(tiny_synth, capsys):
    code, out, _ = run_cli(["corpus", "synth", tiny_synth, "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["utterances"] == 48 and data["labels"]["anger"] == 12 and data["speakers"]["spk02"] == 12
    assert data["folds"][0] == {"name": "spk00", "test": ["spk00"], "valid": ["spk01"],
                                "n_train": 24, "n_valid": 12, "n_test": 12}


def test_ce_student_learns_above_chance_below_perfect(tmp_path, capsys):
    """The synthetic corpus is learnable on held-out speakers, but not trivially."""
    corpus = tmp_path / "corpus"
    assert run_cli(["synth", corpus, "--speakers", "6", "--per-class", "6", "--seed", "0"], capsys)[0] == 0
    argv = ["train", "--corpus", "synth", "--root", corpus, "--length", "16000", "--epochs", "5", "--folds", "0,1",
            "--out", tmp_path / "run"]
    assert run_cli(argv, capsys)[0] == 0
    uas = [json.loads((tmp_path / "run" / f / "results.json").read_text())["ua"] for f in ("spk00", "spk01")]
    assert 0.4 < np.mean(uas) < 1.0, uas


# ------------------------------------------------------------------ bad input
def _corpus_copy(tiny_synth, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_synth, corpus)
    return corpus


def _one_error_line(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert any(line.startswith("serkd: error:") and all(n in line for n in needles) for line in lines), err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda p: p.write_bytes(b"RIFF\x00\x00garbage" * 10), "cannot decode audio"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.unlink(), "not found"),
    ],
)
def test_bad_audio_is_one_line_naming_the_file(tiny_synth, tmp_path, capsys, damage, problem):
    corpus = _corpus_copy(tiny_synth, tmp_path)
    bad = sorted((corpus / "wav" / "spk01").glob("*.wav"))[2]
    damage(bad)
    out = tmp_path / "run"
    code, _, err = run_cli([*TRAIN, "--root", corpus, "--out", out], capsys)
    assert code == 2
    _one_error_line(err, bad.name, problem)
    assert not out.exists() or not list(out.rglob("results.json"))
    code, out_json, err = run_cli(["corpus", "synth", corpus, "--json"], capsys)
    assert code == 2
    _one_error_line(err, bad.name, problem)
    code, out_json, err = run_cli(["corpus", "synth", corpus, "--json", "--skip-bad"], capsys)
    assert code == 0 and json.loads(out_json)["utterances"] == 47


def test_silent_audio_is_reported(tiny_synth, tmp_path, capsys):
    corpus = _corpus_copy(tiny_synth, tmp_path)
    bad = sorted((corpus / "wav" / "spk02").glob("*.wav"))[0]
    import soundfile as sf

    sf.write(bad, np.zeros(8000, dtype=np.float32), 16000)
    code, _, err = run_cli([*TRAIN, "--root", corpus, "--out", tmp_path / "run"], capsys)
    assert code == 2
    _one_error_line(err, bad.name, "all zeros")
    code, _, err = run_cli([*TRAIN, "--epochs", "1", "--folds", "0", "--skip-bad", "--root", corpus,
                            "--out", tmp_path / "run"], capsys)
    assert code == 0 and "skipped 1 bad audio file" in err


def test_unknown_label_is_one_line(tiny_synth, tmp_path, capsys):
    corpus = _corpus_copy(tiny_synth, tmp_path)
    table = corpus / "manifest.csv"
    lines = table.read_text().splitlines()
    lines[2] = lines[2].replace(",anger,", ",boredom,")
    assert "boredom" in lines[2]
    table.write_text("\n".join(lines) + "\n")
    code, _, err = run_cli([*TRAIN, "--root", corpus, "--out", tmp_path / "run"], capsys)
    assert code == 2
    _one_error_line(err, "unknown label 'boredom'", ".wav")


def test_failed_rerun_keeps_earlier_results_intact(trained_run, tiny_synth, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained_run, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    corpus = _corpus_copy(tiny_synth, tmp_path)
    (sorted((corpus / "wav" / "spk00").glob("*.wav"))[0]).write_bytes(b"")
    assert run_cli([*TRAIN, "--root", corpus, "--out", out], capsys)[0] == 2
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_report_plot_and_tensorboard(trained_run, tiny_synth, tmp_path, capsys):
    argv = [*TRAIN, "--epochs", "2", "--folds", "0", "--tensorboard", "--root", tiny_synth, "--out", tmp_path / "tb"]
    assert run_cli(argv, capsys)[0] == 0
    assert list((tmp_path / "tb" / "tensorboard" / "spk00").glob("events.out.tfevents.*"))
    code, _, err = run_cli(["report", trained_run, tmp_path / "tb", "--plot", tmp_path / "report.png"], capsys)
    assert code == 0, err
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
