"""Emo-DB and CSV corpus readers on layouts the tests build (real file names, tiny audio)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from corpus_builders import EMODB_PTH, build_emodb, emodb_names, error_lines, write_clip, write_csv

from serkd.data.corpora import load_corpus
from serkd.errors import SerkdError

EMODB_LABELS = ["anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"]
ORDER = ["03", "08", "09", "10", "11", "12", "13", "14", "15", "16"]


# ------------------------------------------------------------------ Emo-DB
@pytest.fixture(scope="module")
def emodb_release(shared_dir, tmp_path_factory):
    """All 535 real Emo-DB file names (the keys of the seed's logit file) in the official wav/ layout."""
    names = list(torch.load(shared_dir / EMODB_PTH, weights_only=True))
    return build_emodb(tmp_path_factory.mktemp("emodb"), names)


def test_emodb_real_release_counts_labels_and_folds(emodb_release):
    manifest = load_corpus("emodb", emodb_release)
    assert len(manifest) == 535 and not manifest.problems
    assert manifest.labels == EMODB_LABELS
    counts = manifest.counts()
    assert counts["labels"] == {"anger": 127, "boredom": 81, "disgust": 46, "fear": 69, "happiness": 71,
                                "sadness": 62, "neutral": 79}
    assert counts["speakers"] == {"03": 49, "08": 58, "09": 43, "10": 38, "11": 55, "12": 35, "13": 61, "14": 69,
                                  "15": 56, "16": 71}
    by_id = {u.utt_id: (u.label, u.speaker) for u in manifest.utterances}
    assert by_id["03a01Fa"] == ("happiness", "03") and by_id["16b10Wb"] == ("anger", "16")
    assert all(i == "WLEAFTN".index(u.utt_id[5]) for u, i in zip(manifest.utterances, manifest.label_ids()))
    assert [f.name for f in manifest.folds] == [f"spk{s}" for s in ORDER]
    for i, fold in enumerate(manifest.folds):
        assert fold.test == (ORDER[i],) and fold.valid == (ORDER[(i + 1) % 10],)
        assert sorted(fold.train) == sorted(set(ORDER) - {ORDER[i], ORDER[(i + 1) % 10]})


def test_emodb_corpus_cli_json(emodb_release, capsys):
    code, out, _ = run_cli(["corpus", "emodb", emodb_release, "--json", "--no-audio-check"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["utterances"] == 535 and list(data["labels"]) == EMODB_LABELS
    assert data["folds"][0] == {"name": "spk03", "test": ["03"], "valid": ["08"], "n_train": 428, "n_valid": 58,
                                "n_test": 49}


def test_emodb_label_ids_follow_the_seed_letter_order(tmp_path):
    root = build_emodb(tmp_path, emodb_names(texts=("a01",)), subfolder=False)  # wav files directly in ROOT
    manifest = load_corpus("emodb", root)
    assert len(manifest) == 70
    letters = {u.utt_id[5]: int(i) for u, i in zip(manifest.utterances, manifest.label_ids())}
    assert letters == {"W": 0, "L": 1, "E": 2, "A": 3, "F": 4, "T": 5, "N": 6}


def test_emodb_bad_names_are_listed_and_skippable(tmp_path, capsys):
    root = build_emodb(tmp_path, emodb_names(texts=("a01",)))
    write_clip(root / "wav" / "03a02Xa.wav")  # unknown emotion letter
    write_clip(root / "wav" / "take2.wav")  # not an Emo-DB name
    (root / "wav" / "erkennung.txt").write_text("not audio")  # the release's other files are not wavs
    manifest = load_corpus("emodb", root)
    assert sorted(p.path.rsplit("/", 1)[1] for p in manifest.problems) == ["03a02Xa.wav", "take2.wav"]
    code, _, err = run_cli(["corpus", "emodb", root], capsys)
    assert code == 2
    lines = error_lines(err)
    assert any("03a02Xa.wav" in line and "unknown Emo-DB emotion letter 'X'" in line for line in lines), err
    assert any("take2.wav" in line and "not an Emo-DB file name" in line for line in lines), err
    code, out, err = run_cli(["corpus", "emodb", root, "--skip-bad", "--json"], capsys)
    assert code == 0 and json.loads(out)["utterances"] == 70 and "skipped 2 bad input(s)" in err


def test_emodb_without_wavs_or_with_csv_options_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(["corpus", "emodb", tmp_path], capsys)
    assert code == 2 and len(error_lines(err)) == 1 and "no Emo-DB wav files" in err
    build_emodb(tmp_path, emodb_names(texts=("a01",)))
    code, _, err = run_cli(["corpus", "emodb", tmp_path, "--labels", "a,b"], capsys)
    assert code == 2 and "--labels: not an option of the emodb corpus" in err


# ------------------------------------------------------------------ CSV
def _csv_corpus(root, speakers=("s1", "s2", "s3", "s4"), labels=("ang", "hap", "sad"), per=2, fold=None):
    rows = []
    for s_i, speaker in enumerate(speakers):
        for label in labels:
            for k in range(per):
                rel = f"audio/{speaker}/{label}_{k}.wav"
                write_clip(root / rel, s_i + k)
                rows.append({"path": rel, "label": label, "speaker": speaker,
                             "fold": fold(speaker) if fold else ""})
    return rows


def test_csv_paths_are_relative_to_the_csv_and_labels_come_from_the_data(tmp_path, capsys):
    rows = _csv_corpus(tmp_path / "data")
    table = write_csv(tmp_path / "data" / "list.csv", rows)
    manifest = load_corpus("csv", table)
    assert len(manifest) == 24 and manifest.labels == ["ang", "hap", "sad"]
    assert manifest.utterances[0].path == tmp_path / "data" / "audio/s1/ang_0.wav"
    assert manifest.utterances[0].utt_id == "audio/s1/ang_0" and manifest.utterances[0].duration == pytest.approx(0.05)
    assert [(f.name, f.test, f.valid) for f in manifest.folds] == [
        ("s1", ("s1",), ("s2",)), ("s2", ("s2",), ("s3",)), ("s3", ("s3",), ("s4",)),
        ("s4", ("s4",), ("s1",))]
    code, out, _ = run_cli(["corpus", "csv", table, "--json", "--labels", "sad,hap,ang"], capsys)
    assert code == 0 and list(json.loads(out)["labels"]) == ["sad", "hap", "ang"]


def test_csv_fixed_labels_define_ids_and_reject_unknown_labels(tmp_path, capsys):
    rows = _csv_corpus(tmp_path)
    rows[3]["label"] = "fear"
    table = write_csv(tmp_path / "list.csv", rows)
    manifest = load_corpus("csv", table, labels=["sad", "hap", "ang"])
    assert manifest.label_ids()[0] == 2  # ang is id 2 when --labels puts it last
    (problem,) = manifest.problems
    assert "unknown label 'fear' on 1 row(s)" in str(problem) and Path(rows[3]["path"]).name in str(problem)
    code, _, err = run_cli(["corpus", "csv", table, "--labels", "sad,hap,ang"], capsys)
    assert code == 2 and any("hap_1.wav" in line and "unknown label 'fear'" in line for line in error_lines(err))
    code, _, err = run_cli(["corpus", "csv", table, "--labels", "sad,sad,ang"], capsys)
    assert code == 2 and "lists a class twice" in err


def test_csv_folds_from_the_fold_column(tmp_path):
    rows = _csv_corpus(tmp_path, speakers=("a1", "a2", "b1", "c1", "c2"), fold=lambda s: s[0].upper())
    manifest = load_corpus("csv", write_csv(tmp_path / "list.csv", rows, ("path", "label", "speaker", "fold")))
    assert [(f.name, f.test, f.valid, f.train) for f in manifest.folds] == [
        ("a1+a2", ("a1", "a2"), ("b1",), ("c1", "c2")),
        ("b1", ("b1",), ("c1", "c2"), ("a1", "a2")),
        ("c1+c2", ("c1", "c2"), ("a1", "a2"), ("b1",)),
    ]
    rows[0]["fold"] = "B"  # speaker a1 now in folds A and B
    with pytest.raises(SerkdError, match="speaker 'a1' is in folds"):
        load_corpus("csv", write_csv(tmp_path / "list.csv", rows, ("path", "label", "speaker", "fold")))


def test_csv_leave_n_speakers_out(tmp_path, capsys):
    table = write_csv(tmp_path / "list.csv", _csv_corpus(tmp_path, speakers=[f"s{i}" for i in range(6)], per=1))
    code, out, _ = run_cli(["corpus", "csv", table, "--json", "--speakers-per-fold", "2"], capsys)
    assert code == 0
    folds = json.loads(out)["folds"]
    assert [(f["name"], f["test"], f["valid"], f["n_train"]) for f in folds] == [
        ("s0+s1", ["s0", "s1"], ["s2", "s3"], 6), ("s2+s3", ["s2", "s3"], ["s4", "s5"], 6),
        ("s4+s5", ["s4", "s5"], ["s0", "s1"], 6)]


def test_csv_bad_rows_each_get_a_line(tmp_path, capsys):
    rows = _csv_corpus(tmp_path)
    rows[1]["speaker"] = ""
    rows[5]["path"] = rows[4]["path"]
    table = write_csv(tmp_path / "list.csv", rows)
    code, _, err = run_cli(["corpus", "csv", table], capsys)
    lines = error_lines(err)
    assert code == 2
    assert any("list.csv: line 3: empty speaker" in line for line in lines), err
    assert any("list.csv: line 7: utterance 'audio/s1/sad_0' repeats line 6" in line for line in lines), err
    code, out, _ = run_cli(["corpus", "csv", table, "--skip-bad", "--json"], capsys)
    assert code == 0 and json.loads(out)["utterances"] == 22
    table.write_text("file,label\nx.wav,ang\n")
    code, _, err = run_cli(["corpus", "csv", table], capsys)
    assert code == 2 and error_lines(err) == [f"serkd: error: {table}: missing column(s) path, speaker "
                                              "(have: file, label)"]


def test_csv_with_a_byte_order_mark_and_spaces(tmp_path):
    rows = _csv_corpus(tmp_path, per=1)
    text = "\ufeffpath, label ,speaker\n" + "".join(f"{r['path']}, {r['label']} ,{r['speaker']}\n" for r in rows)
    (tmp_path / "list.csv").write_text(text, encoding="utf-8")
    manifest = load_corpus("csv", tmp_path / "list.csv")
    assert len(manifest) == 12 and manifest.labels == ["ang", "hap", "sad"] and not manifest.problems
