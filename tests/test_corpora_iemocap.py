"""IEMOCAP from the official release layout, built from the seed's real list of its 5531 4-class utterances."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from conftest import run_cli
from corpus_builders import IEMOCAP_PTH, build_iemocap, error_lines, iemocap_rows

from serkd.data.corpora import load_corpus
from serkd.data.seed_teacher import import_seed
from serkd.data.teacher_outputs import read_fold
from serkd.experiments.teacher_eval import evaluate

SESSION_COUNTS = {"Session1": 1085, "Session2": 1023, "Session3": 1151, "Session4": 1031, "Session5": 1241}
FOLD_NAMES = [f"Ses0{i}F+Ses0{i}M" for i in range(1, 6)]  # folds are named after their test speakers


@pytest.fixture(scope="module")
def rows(shared_dir):
    return iemocap_rows(shared_dir)


@pytest.fixture(scope="module")
def release(rows, tmp_path_factory):
    return build_iemocap(tmp_path_factory.mktemp("iemocap"), rows)


@pytest.fixture(scope="module")
def manifest(release):
    return load_corpus("iemocap", release)


def test_reads_exactly_the_5531_utterances_with_their_labels(manifest, rows):
    assert not manifest.problems
    assert manifest.labels == ["anger", "happiness", "sadness", "neutral"]
    expected = {r["file"]: int(r["label"]) for r in rows}  # the seed's ids: ang 0, hap(+exc) 1, sad 2, neu 3
    got = dict(zip([u.utt_id for u in manifest.utterances], manifest.label_ids().tolist()))
    assert len(manifest) == len(got) == 5531 and got == expected
    assert Counter(u.group for u in manifest.utterances) == SESSION_COUNTS
    assert manifest.counts()["labels"] == {"anger": 1103, "happiness": 1636, "sadness": 1084, "neutral": 1708}
    paths = {u.utt_id: u.path.relative_to(manifest.root).as_posix() for u in manifest.utterances}
    assert paths == {r["file"]: r["path"] for r in rows}
    assert all(u.duration == pytest.approx(0.05, abs=0.035) for u in manifest.utterances)


def test_speaker_is_the_actor_not_the_dialog_lead(manifest, rows):
    speakers = {u.utt_id: u.speaker for u in manifest.utterances}
    assert speakers["Ses01M_impro04_F000"] == "Ses01F"  # the seed's CSV says Ses01M, the dialog's lead
    assert all(speakers[r["file"]] == r["file"][:5] + r["file"].rsplit("_", 1)[1][0] for r in rows)
    assert sum(speakers[r["file"]] != r["speaker"] for r in rows) > 2000
    assert len(manifest.speakers) == 10


def test_five_leave_one_session_out_folds_validating_on_the_next_session(manifest):
    assert [f.name for f in manifest.folds] == FOLD_NAMES
    assert [f.group for f in manifest.folds] == list(SESSION_COUNTS)  # --folds Session1 still picks one
    for i, fold in enumerate(manifest.folds):
        n, nxt = i + 1, (i + 1) % 5 + 1
        assert fold.test == (f"Ses0{n}F", f"Ses0{n}M") and fold.valid == (f"Ses0{nxt}F", f"Ses0{nxt}M")
        assert len(fold.train) == 6 and not set(fold.train) & (set(fold.test) | set(fold.valid))


def test_missing_and_broken_wavs_are_named(rows, tmp_path, capsys):
    few = [r for r in rows if int(r["utterance"]) < 2]  # a few per dialog, all five sessions
    root = build_iemocap(tmp_path, few)
    gone = root / few[0]["path"]
    gone.unlink()
    empty = root / few[1]["path"]
    empty.write_bytes(b"")
    code, _, err = run_cli(["corpus", "iemocap", root], capsys)
    lines = error_lines(err)
    assert code == 2
    assert any(str(gone) in line and "audio file not found" in line for line in lines), err
    assert any(str(empty) in line and "empty file" in line for line in lines), err
    code, out, err = run_cli(["corpus", "iemocap", root, "--skip-bad", "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["utterances"] == len(few) - 2 and "skipped 2 bad input(s)" in err
    assert data["folds"][4]["name"] == "Ses05F+Ses05M" and data["folds"][4]["valid"] == ["Ses01F", "Ses01M"]


def test_not_an_iemocap_release_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(["corpus", "iemocap", tmp_path], capsys)
    assert code == 2 and len(error_lines(err)) == 1 and "no Session1..Session5 folders" in err
    (tmp_path / "Session1" / "sentences").mkdir(parents=True)
    code, _, err = run_cli(["corpus", "iemocap", tmp_path], capsys)
    assert code == 2 and "EmoEvaluation: IEMOCAP label folder not found" in err


def test_seed_logits_import_and_evaluate_leaky(manifest, shared_dir, tmp_path):
    # the Python API on the module's manifest: the CLI verbs are tested on Emo-DB, reading 5531 headers again is slow
    store = tmp_path / "teacher"
    summary = import_seed(shared_dir / IEMOCAP_PTH, manifest, store).to_json()
    assert (summary["keys"], summary["matched"], summary["unmatched_keys"], summary["uncovered_utterances"]) == (
        5531, 5531, 0, 0)
    assert summary["folds"] == FOLD_NAMES
    fold = read_fold(store, "Ses03F+Ses03M")
    assert fold.meta["provenance"] == "seed-shipped" and fold.meta["fold_clean"] is False
    report = evaluate(store, manifest)
    assert [r["fold"] for r in report["rows"]] == FOLD_NAMES
    wa = [r["wa"] for r in report["rows"]]
    assert all(0.83 <= w <= 0.90 for w in wa), wa  # the design's "WA 0.83-0.89 on held-out sessions"
    assert [r["n_test"] for r in report["rows"]] == list(SESSION_COUNTS.values())
    assert all(r["marks"] == ["leaky-teacher"] for r in report["rows"])
    (total,) = report["summary"]
    assert total["n_folds"] == 5 and total["wa_mean"] == pytest.approx(np.mean(wa))
