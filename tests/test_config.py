"""One experiment config for CLI, YAML and Python; the per-fold unit; resume; parallel writers; new-user fixes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run_cli

from serkd.config import ConfigError, RunConfig, TeacherConfig
from serkd.io import read_json

COMMON = ["--corpus", "synth", "--length", "8000", "--epochs", "1", "--seed", "5"]


def test_library_errors_name_fields_not_flags():
    with pytest.raises(ConfigError, match=r"^batch_size: must be at least 1$"):
        RunConfig(corpus="synth", root="r", out="o", batch_size=0).validate()
    with pytest.raises(ConfigError, match=r"^out: required"):
        RunConfig(corpus="synth", root="r").validate()
    with pytest.raises(ConfigError, match="grad_accum: applies to WavLM teachers only"):
        TeacherConfig(model="resnet18", corpus="synth", root="r", out="o", grad_accum=2).validate()
    assert TeacherConfig(model="resnet18").resolved().epochs == 100
    assert TeacherConfig(model="microsoft/wavlm-base-plus").resolved().lr == 5e-5


def test_yaml_round_trip_and_bad_keys(tmp_path):
    config = RunConfig(corpus="synth", root="data", out="runs/x", method="kd", method_params={"temp": 4.0},
                       folds="0,2")
    path = tmp_path / "run.yaml"
    path.write_text(config.to_yaml())
    assert RunConfig.from_yaml(path) == config
    path.write_text("corpus: synth\nbatch_sise: 8\n")
    with pytest.raises(ConfigError, match=f"^{path}: batch_sise: unknown field"):
        RunConfig.from_yaml(path)
    path.write_text("epochs: ten\n")
    with pytest.raises(ConfigError, match=f"^{path}: epochs: expected a whole number"):
        RunConfig.from_yaml(path)
    path.write_text("folds: [0, 2]\nlr: 1e-3\n")  # PyYAML reads 1e-3 as text: still a number here
    loaded = RunConfig.from_yaml(path)
    assert loaded.folds == "0,2" and loaded.lr == 0.001


def test_config_file_flags_override_and_errors_name_the_file(tiny_synth, tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"corpus": "synth", "root": str(tiny_synth), "out": str(tmp_path / "o"),
                                    "epochs": 3, "student": "lightsernet"}))
    code, out, _ = run_cli(["train", "--config", path, "--epochs", "2", "--print-config"], capsys)
    assert code == 0 and yaml.safe_load(out)["epochs"] == 2 and yaml.safe_load(out)["root"] == str(tiny_synth)
    path.write_text("corpus: synth\nnope: 1\n")
    code, _, err = run_cli(["train", "--config", path], capsys)
    assert code == 2 and err.startswith(f"serkd: error: {path}: nope: unknown field (known: ") and err.count("\n") == 1
    path.write_text(f"corpus: synth\nroot: {tiny_synth}\nout: {tmp_path / 'o'}\nbatch_size: 0\n")
    code, _, err = run_cli(["train", "--config", path], capsys)
    assert code == 2 and err.strip() == f"serkd: error: {path}: batch_size: must be at least 1"
    code, _, err = run_cli(["train", "--config", path, "--batch-size", "-3"], capsys)
    assert code == 2 and err.strip() == "serkd: error: --batch-size: must be at least 1"


def test_printed_config_trains_bit_identical_results(tiny_synth, tmp_path, capsys):
    flags = [*COMMON, "--epochs", "2", "--folds", "1", "--root", tiny_synth, "--method-param", "label_smoothing=0.1"]
    assert run_cli(["train", *flags, "--out", tmp_path / "a"], capsys)[0] == 0
    code, printed, _ = run_cli(["train", *flags, "--out", tmp_path / "b", "--print-config"], capsys)
    assert code == 0
    (tmp_path / "b.yaml").write_text(printed)
    assert run_cli(["train", "--config", tmp_path / "b.yaml"], capsys)[0] == 0
    first, again = (read_json(tmp_path / run / "spk01" / "results.json") for run in ("a", "b"))
    assert [h["train_loss"] for h in first["history"]] == [h["train_loss"] for h in again["history"]]
    assert (first["wa"], first["ua"], first["confusion"]) == (again["wa"], again["ua"], again["confusion"])
    saved = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert saved["method_params"] == {"label_smoothing": 0.1} and saved["epochs"] == 2


def test_print_config_shows_the_values_used_and_reads_back_as_the_same_run(tiny_synth, tmp_path, capsys):
    where = ["--corpus", "synth", "--root", tiny_synth, "--out", tmp_path / "t"]
    code, out, _ = run_cli(["teacher", "train", "--model", "lightsernet", *where, "--print-config"], capsys)
    assert code == 0 and "\nepochs: 100\n" in out and "\nlength: null  # resolved: 24000\n" in out
    flags = TeacherConfig(model="lightsernet", corpus="synth", root=str(tiny_synth), out=str(tmp_path / "t"))
    assert TeacherConfig.from_dict(yaml.safe_load(out)) == flags  # the same config: its folds are reused
    code, out, _ = run_cli(["teacher", "train", "--model", "egemaps", *where, "--print-config"], capsys)
    assert code == 0 and "c_grid: null  # resolved: 0.001,0.01,0.1,1,10" in out and "epochs" not in out
    code, out, _ = run_cli(["train", *where, "--recipe", "strong", "--epochs", "5", "--print-config"], capsys)
    printed = yaml.safe_load(out)
    assert code == 0 and printed["schedule"] == "cosine" and printed["time_shift"] == 1.0 and printed["epochs"] == 5
    assert printed["warmup_epochs"] == 1.0 and "length: null  # resolved: 24000" in out
    strong = RunConfig(corpus="synth", root=str(tiny_synth), out=str(tmp_path / "t"), recipe="strong", epochs=5)
    assert RunConfig.from_dict(printed).resolved().config_hash() == strong.resolved().config_hash()


def test_help_of_flags_that_turn_an_option_off_says_what_the_flag_does(capsys):
    code, out, _ = run_cli(["teacher", "train", "--help"], capsys)
    text = " ".join(out.split())
    assert code == 0
    assert "--train-feature-encoder [wavlm] fine-tune the CNN feature encoder too (default: it stays frozen)" in text
    assert "--no-bf16 [wavlm] no bf16 autocast on CUDA" in text
    assert "--epochs EPOCHS [cnn, wavlm] training epochs (default: 100 cnn, 20 wavlm)" in text
    assert "--c-grid C_GRID [egemaps] comma list" in text


def test_rerun_resumes_and_overwrite_starts_over(tiny_synth, tmp_path, capsys):
    argv = ["train", *COMMON, "--folds", "0", "--root", tiny_synth, "--out", tmp_path / "r"]
    assert run_cli(argv, capsys)[0] == 0
    first = (tmp_path / "r" / "spk00" / "results.json").stat().st_mtime_ns
    code, _, err = run_cli(argv, capsys)
    assert code == 0 and "fold spk00: cached (same config and data)" in err
    assert (tmp_path / "r" / "spk00" / "results.json").stat().st_mtime_ns == first
    code, _, err = run_cli([*argv, "--overwrite"], capsys)
    assert code == 0 and "cached" not in err
    assert (tmp_path / "r" / "spk00" / "results.json").stat().st_mtime_ns != first


def test_train_fold_is_one_call_with_events(tiny_synth, tmp_path):
    from serkd.train.run import train_fold

    events = []
    config = RunConfig(corpus="synth", root=str(tiny_synth), out=str(tmp_path / "u"), length=8000, epochs=2)
    result = train_fold(config, "spk02", on_event=events.append)
    assert result.fold == "spk02" and result.role == "student" and len(result.history) == 2
    assert [e.data["epoch"] for e in events if e.kind == "epoch"] == [1, 2]
    assert any(e.kind == "fold_done" and e.data["result"] is result for e in events)
    saved = read_json(tmp_path / "u" / "spk02" / "results.json")
    assert saved == json.loads(json.dumps(result.to_json()))
    assert train_fold(config, 2).config_hash == result.config_hash  # by index: the cached result


def test_bad_length_fails_before_features_and_leaves_nothing(tiny_synth, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(["train", *COMMON, "--length", "1000", "--root", tiny_synth, "--out", out], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("serkd: error: --length: 1000 samples")
    assert not out.exists()
    code, _, err = run_cli(["train", *COMMON, "--length", "1536", "--root", tiny_synth, "--out", out], capsys)
    assert code == 2 and "too small for lightsernet" in err and not out.exists()
    code, _, err = run_cli(["train", *COMMON, "--folds", "9", "--root", tiny_synth, "--out", out], capsys)
    assert code == 2 and err.startswith("serkd: error: --folds: unknown fold '9'") and not out.exists()


def test_plain_epoch_lines_when_not_a_terminal(tiny_synth, tmp_path):
    env = {**os.environ, "SERKD_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "serkd", "train", *COMMON, "--epochs", "2", "--folds", "0",
                           "--threads", "1", "--root", str(tiny_synth), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "train loss" in line]
    assert [line.split(" epoch ")[1].split()[0] for line in lines] == ["1/2", "2/2"]
    assert all("valid UA" in line and "ETA" in line for line in lines)


def test_two_processes_share_a_run_folder_and_a_cache(tiny_synth, tmp_path):
    """Two `serkd train` at once on one run folder and one feature/hash cache lose and corrupt nothing."""
    cache = tmp_path / "cache"
    env = {**os.environ, "SERKD_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "shared-run"
    procs = [subprocess.Popen([sys.executable, "-m", "serkd", "train", *COMMON, "--folds", str(fold), "--threads",
                               "1", "--root", str(tiny_synth), "--out", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for fold in (0, 1)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    assert sorted(f["name"] for f in read_json(out / "run.json")["folds"]) == ["spk00", "spk01"]
    for fold in ("spk00", "spk01"):
        result = read_json(out / fold / "results.json")
        assert result["fold"] == fold and len(result["history"]) == 1
    hashes = read_json(cache / "audio_hashes.json")
    assert len(hashes) == 48 and all(len(entry[2]) == 40 for entry in hashes.values())
    entries = list((cache / "features").glob("*/*.npy"))
    assert len(entries) == 48
    assert all(np.load(e).shape[0] == 128 for e in entries)
    assert not list(out.rglob(".*.tmp")) and not list(cache.rglob(".*.tmp"))


def test_stale_teacher_is_refused_unless_allowed(tiny_synth, tmp_path, capsys):
    from serkd.data import teacher_outputs
    from serkd.io import atomic_write_json

    store = tmp_path / "teacher"
    assert run_cli(["teacher", "train", "--model", "lightsernet", *COMMON, "--folds", "0", "--root", tiny_synth,
                    "--out", store], capsys)[0] == 0
    meta_path = store / "spk00" / teacher_outputs.META
    meta = read_json(meta_path)
    meta["audio_sha1"][3] = "0" * 40  # as if an utterance's audio changed under the same id
    atomic_write_json(meta_path, meta)
    argv = ["train", *COMMON, "--folds", "0", "--root", tiny_synth, "--method", "kd", "--teacher", store]
    code, _, err = run_cli([*argv, "--out", tmp_path / "s"], capsys)
    assert code == 2 and err.count("\n") == 1 and "computed on other audio (1 of 48" in err
    assert "--allow-stale-teacher" in err
    assert not (tmp_path / "s").exists()
    code, _, err = run_cli([*argv, "--allow-stale-teacher", "--out", tmp_path / "s"], capsys)
    assert code == 0 and read_json(tmp_path / "s" / "spk00" / "results.json")["marks"] == ["stale-teacher"]
    # the store recorded its corpus: teacher eval needs no --corpus/--root
    code, out, _ = run_cli(["teacher", "eval", store, "--json"], capsys)
    assert code == 0 and [r["fold"] for r in json.loads(out)["rows"]] == ["spk00"]


def test_synth_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "old.txt").write_text("x")
    code, _, err = run_cli(["synth", tmp_path, "--speakers", "3", "--per-class", "1"], capsys)
    assert code == 2 and "not empty" in err and "--overwrite" in err


def test_methods_and_students_list_parameters_and_defaults(capsys):
    code, out, _ = run_cli(["methods", "--json"], capsys)
    methods = {m["name"]: m for m in json.loads(out)}
    assert code == 0 and methods["kd"]["params"] == {"temp": 1.2, "alpha": 0.7, "kl_reduction": "mean",
                                                     "standardize": False}
    assert methods["ce"]["needs_teacher"] is False and "fitnet" in methods
    code, out, _ = run_cli(["students", "--json"], capsys)
    students = {s["name"]: s for s in json.loads(out)}
    assert students["lightsernet"]["params"]["seed_softmax"] is False


def test_student_params_reach_the_model(tiny_synth, tmp_path, capsys):
    argv = ["train", *COMMON, "--folds", "0", "--root", tiny_synth, "--out", tmp_path / "r",
            "--student-param", "dropout=0.1"]
    assert run_cli(argv, capsys)[0] == 0
    from serkd.train.checkpoint import load_checkpoint

    model, meta = load_checkpoint(tmp_path / "r" / "spk00")
    assert meta["model_options"] == {"dropout": 0.1} and model.head[2].p == 0.1
    code, _, err = run_cli([*argv[:-2], "--student-param", "width=3"], capsys)
    assert code == 2 and "--student-param" in err and "no option(s) width" in err


def test_unknown_labels_are_said_once_with_counts(tiny_synth, tmp_path, capsys):
    code, _, err = run_cli(["corpus", "csv", tiny_synth / "manifest.csv", "--labels", "anger,neutral",
                            "--no-audio-check"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 3, err  # one line per unknown label, then the hint
    assert "unknown label 'happiness' on 12 row(s)" in err and "unknown label 'sadness' on 12 row(s)" in err
    assert "(24 of 48 files)" in lines[-1] and "would drop 50% of the corpus" in lines[-1]


def test_export_of_a_run_folder_lists_its_folds(tiny_synth, tmp_path, capsys):
    assert run_cli(["train", *COMMON, "--folds", "0", "--root", tiny_synth, "--out", tmp_path / "r"], capsys)[0] == 0
    code, _, err = run_cli(["export", tmp_path / "r", "--out", tmp_path / "m.onnx"], capsys)
    assert code == 2 and "a run folder; export one of its folds" in err and str(Path(tmp_path / "r" / "spk00")) in err
