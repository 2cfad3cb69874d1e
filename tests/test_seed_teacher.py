"""The seed's shipped Emo-DB teacher logits: imported as not fold-clean, evaluated, refused unless allowed."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import run_cli
from corpus_builders import EMODB_PTH, build_emodb, error_lines

from serkd.data.teacher_outputs import folds_in, read_fold


@pytest.fixture(scope="module")
def seed_logits(shared_dir):
    return torch.load(shared_dir / EMODB_PTH, weights_only=True)


@pytest.fixture(scope="module")
def emodb_release(seed_logits, tmp_path_factory):
    return build_emodb(tmp_path_factory.mktemp("emodb"), list(seed_logits))


@pytest.fixture(scope="module")
def imported(emodb_release, shared_dir, tmp_path_factory):
    from serkd.cli import main

    store = tmp_path_factory.mktemp("seed_teacher")
    argv = ["teacher", "import-seed", shared_dir / EMODB_PTH, "--corpus", "emodb", "--root", emodb_release,
            "--out", store]
    assert main([str(a) for a in argv]) == 0
    return store


def test_import_counts_and_stores_every_fold_as_leaky(emodb_release, shared_dir, seed_logits, tmp_path, capsys):
    argv = ["teacher", "import-seed", shared_dir / EMODB_PTH, "--corpus", "emodb", "--root", emodb_release,
            "--out", tmp_path, "--json"]
    code, out, _ = run_cli(argv, capsys)
    summary = json.loads(out)
    assert code == 0
    assert (summary["keys"], summary["matched"], summary["unmatched_keys"], summary["uncovered_utterances"]) == (
        535, 535, 0, 0)
    assert folds_in(tmp_path) == sorted(f"spk{s}" for s in ("03", "08", "09", "10", "11", "12", "13", "14", "15",
                                                              "16"))
    fold = read_fold(tmp_path, "spk10")
    assert fold.meta["provenance"] == "seed-shipped" and fold.meta["fold_clean"] is False
    assert fold.meta["test_speakers"] == ["10"] and fold.meta["labels"][0] == "anger"
    row = fold.utt_ids.index("13a07Na")
    assert np.array_equal(fold.logits[row], seed_logits["13a07Na.wav"].numpy())
    assert np.array_equal(read_fold(tmp_path, "spk03").logits, fold.logits)  # the same logits in every fold


def test_unmatched_keys_and_uncovered_utterances_are_counted(seed_logits, shared_dir, tmp_path, capsys):
    names = [n for n in seed_logits if n[:2] in ("03", "08", "09")]
    root = build_emodb(tmp_path / "corpus", [*names, "03a01Wz.wav"])  # a take the seed file does not have
    argv = ["teacher", "import-seed", shared_dir / EMODB_PTH, "--corpus", "emodb", "--root", root,
            "--out", tmp_path / "store"]
    code, out, _ = run_cli([*argv, "--json"], capsys)
    summary = json.loads(out)
    assert code == 0
    assert summary["matched"] == len(names) and summary["unmatched_keys"] == 535 - len(names)
    assert summary["uncovered_utterances"] == 1 and summary["uncovered_examples"] == ["03a01Wz"]
    code, _, err = run_cli(argv, capsys)
    text = " ".join(err.split())
    assert code == 0 and f"{535 - len(names)} key(s) match no utterance" in text
    assert "1 utterance(s) have no seed logits, e.g. 03a01Wz" in text and "--allow-leaky-teacher" in text


def test_import_refuses_wrong_files(emodb_release, shared_dir, tmp_path, capsys):
    iemocap = shared_dir / "reference/seed_artifacts/iemocap_tea_preds_by_path.pth"
    code, _, err = run_cli(["teacher", "import-seed", iemocap, "--corpus", "emodb", "--root", emodb_release,
                            "--out", tmp_path / "a"], capsys)
    assert code == 2 and error_lines(err) == [
        f"serkd: error: {iemocap}: 4 logits per utterance, but the emodb corpus has 7 classes (anger, boredom, "
        "disgust, fear, happiness, sadness, neutral)"]
    torch.save({"x": torch.nn.Linear(2, 2)}, tmp_path / "module.pth")  # a pickled object: weights_only refuses it
    code, _, err = run_cli(["teacher", "import-seed", tmp_path / "module.pth", "--corpus", "emodb", "--root",
                            emodb_release, "--out", tmp_path / "b"], capsys)
    assert code == 2 and len(error_lines(err)) == 1 and "cannot read as a weights-only torch file" in err
    torch.save({"nowhere.wav": torch.zeros(7)}, tmp_path / "other.pth")
    code, _, err = run_cli(["teacher", "import-seed", tmp_path / "other.pth", "--corpus", "emodb", "--root",
                            emodb_release, "--out", tmp_path / "c"], capsys)
    assert code == 2 and "no key names an utterance" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_eval_reports_high_leaky_wa_per_fold(imported, emodb_release, seed_logits, capsys):
    code, out, _ = run_cli(["teacher", "eval", imported, "--corpus", "emodb", "--root", emodb_release, "--json"],
                           capsys)
    report = json.loads(out)
    assert code == 0 and [r["fold"] for r in report["rows"]][:2] == ["spk03", "spk08"]
    letters = "WLEAFTN"
    spk15 = [name for name in seed_logits if name.startswith("15")]
    hits = [int(seed_logits[n].argmax()) == letters.index(n[5]) for n in spk15]
    row = report["rows"][8]
    assert row["fold"] == "spk15" and row["n_test"] == 56 and row["wa"] == pytest.approx(np.mean(hits))
    assert {"fold", "test", "wa", "ua", "student", "method", "features", "marks"} <= set(row)
    (summary,) = report["summary"]
    assert summary["n_folds"] == 10 and summary["wa_mean"] > 0.9  # far above any held-out result: the logits leak
    assert summary["marks"] == ["leaky-teacher"]
    assert {"wa_mean", "wa_std", "ua_mean", "ua_std"} <= set(summary)
    code, out, _ = run_cli(["teacher", "eval", imported, "--corpus", "emodb", "--root", emodb_release], capsys)
    assert code == 0 and "leaky-teacher" in out and "spk16" in out


def test_train_refuses_the_leaky_teacher_unless_allowed(imported, emodb_release, seed_logits, tmp_path, capsys):
    # one take per speaker and emotion (up to 70 files) keeps one epoch fast; the same audio as the import's
    first = {}
    for name in sorted(seed_logits):
        first.setdefault((name[:2], name[5]), name)
    root = tmp_path / "small"
    (root / "wav").mkdir(parents=True)
    for name in first.values():
        shutil.copy2(emodb_release / "wav" / name, root / "wav" / name)
    argv = ["train", "--corpus", "emodb", "--root", root, "--method", "kd", "--teacher", imported, "--epochs", "1",
            "--folds", "0", "--length", "8000", "--out", tmp_path / "run"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    (line,) = error_lines(err)
    assert "not fold-clean (seed-shipped)" in line and "--allow-leaky-teacher" in line
    assert not (tmp_path / "run" / "spk03" / "results.json").exists()
    code, _, err = run_cli([*argv, "--allow-leaky-teacher"], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "run" / "spk03" / "results.json").read_text())
    assert result["marks"] == ["leaky-teacher"] and result["n_test"] == len([k for k in first if k[0] == "03"])
