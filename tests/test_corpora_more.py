"""RAVDESS, CREMA-D and MSP-Podcast readers on layouts the tests build (real file names, tiny audio)."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from corpus_builders import (
    build_cremad,
    build_msp_podcast,
    build_ravdess,
    cremad_names,
    error_lines,
    msp_rows,
    ravdess_names,
    write_clip,
)

from serkd.data.corpora import load_corpus
from serkd.errors import SerkdError

RAVDESS_LABELS = ["neutral", "calm", "happiness", "sadness", "anger", "fear", "disgust", "surprise"]
CREMAD_LABELS = ["anger", "disgust", "fear", "happiness", "neutral", "sadness"]


def corpus_cli(argv: list, capsys) -> tuple[int, str, str]:
    """``serkd corpus ...``: the CLI's corpus choices come from the registry."""
    return run_cli(["corpus", *argv], capsys)


def assert_speaker_independent(manifest):
    speakers = set(manifest.speakers)
    for fold in manifest.folds:
        test, valid, train = set(fold.test), set(fold.valid), set(fold.train)
        assert valid and not (test & valid) and not (train & (test | valid)), fold.name
        assert test | valid | train == speakers, fold.name


def one_line_error(match: str, kind: str, root, **options) -> str:
    with pytest.raises(SerkdError) as info:
        load_corpus(kind, root, **options)
    message = str(info.value)
    assert "\n" not in message and match in message, message
    return message


# ------------------------------------------------------------------ RAVDESS
@pytest.fixture(scope="module")
def ravdess_release(tmp_path_factory):
    """The 1440 speech files of the 24 actors; the song release unpacked into the same folders for actor 01-02."""
    root = tmp_path_factory.mktemp("ravdess")
    build_ravdess(root, ravdess_names() + ravdess_names(actors=(1, 2), channel="02"))
    write_clip(root / "Actor_03" / "01-01-03-01-01-01-03.wav")  # a full-AV modality code on a wav: not speech audio
    return root


def test_ravdess_release_counts_labels_speakers_and_folds(ravdess_release):
    manifest = load_corpus("ravdess", ravdess_release)
    assert len(manifest) == 1440 and not manifest.problems
    assert manifest.labels == RAVDESS_LABELS
    counts = manifest.counts()
    assert counts["labels"] == {label: 96 if label == "neutral" else 192 for label in RAVDESS_LABELS}
    assert counts["speakers"] == {f"actor{a:02d}": 60 for a in range(1, 25)}
    by_id = {u.utt_id: (u.label, u.speaker) for u in manifest.utterances}
    assert by_id["03-01-05-01-02-01-01"] == ("anger", "actor01")
    assert by_id["03-01-02-02-01-02-24"] == ("calm", "actor24")
    assert manifest.notes == ["skipped 121 RAVDESS file(s) that are not audio-only speech (modality 01 1, song 120)"]
    groups = [[f"actor{a:02d}" for a in range(k, k + 4)] for k in range(1, 25, 4)]
    assert [f.name for f in manifest.folds] == ["+".join(g) for g in groups]
    assert manifest.folds[0].name == "actor01+actor02+actor03+actor04"
    for i, fold in enumerate(manifest.folds):
        assert list(fold.test) == groups[i] and list(fold.valid) == groups[(i + 1) % 6] and len(fold.train) == 16
    assert_speaker_independent(manifest)


def test_ravdess_corpus_cli_json(ravdess_release, capsys):
    code, out, err = corpus_cli(["ravdess", ravdess_release, "--json", "--no-audio-check"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["utterances"] == 1440 and list(data["labels"]) == RAVDESS_LABELS
    assert data["folds"][0] == {"name": "actor01+actor02+actor03+actor04",
                                "test": ["actor01", "actor02", "actor03", "actor04"],
                                "valid": ["actor05", "actor06", "actor07", "actor08"],
                                "n_train": 960, "n_valid": 240, "n_test": 240}
    assert "skipped 121 RAVDESS file(s)" in err
    code, out, _ = corpus_cli(["ravdess", ravdess_release, "--json", "--no-audio-check", "--labels",
                            "sadness,anger"], capsys)
    assert code == 0 and json.loads(out)["labels"] == {"sadness": 192, "anger": 192}


def test_ravdess_label_selection_and_merge(ravdess_release):
    manifest = load_corpus("ravdess", ravdess_release, labels=["anger", "calm"])
    assert manifest.labels == ["anger", "calm"] and len(manifest) == 384
    assert {u.label for u, i in zip(manifest.utterances, manifest.label_ids()) if i == 1} == {"calm"}
    assert "left out 1056 utterance(s) of classes not selected" in manifest.notes[-1]
    merged = load_corpus("ravdess", ravdess_release, label_map={"calm": "neutral"})
    assert merged.labels == ["neutral", "happiness", "sadness", "anger", "fear", "disgust", "surprise"]
    assert merged.counts()["labels"]["neutral"] == 288 and len(merged) == 1440
    both = load_corpus("ravdess", ravdess_release, labels=["neutral", "anger"], label_map=["calm=neutral"])
    assert both.counts()["labels"] == {"neutral": 288, "anger": 192}
    message = one_line_error("unknown class 'angry' in labels", "ravdess", ravdess_release, labels=["angry"])
    assert message.startswith("ravdess:") and "known: neutral, calm, happiness" in message
    one_line_error("unknown class 'calm' in labels", "ravdess", ravdess_release, labels=["calm"],
                   label_map={"calm": "neutral"})
    one_line_error("unknown class 'boredom' in label_map", "ravdess", ravdess_release, label_map={"boredom": "calm"})
    one_line_error("maps 'calm' to unknown class 'netural'", "ravdess", ravdess_release, label_map={"calm": "netural"})
    one_line_error("labels lists class 'anger' twice", "ravdess", ravdess_release, labels=["anger", "anger"])
    one_line_error("--speakers-per-fold: not an option of the ravdess corpus (it takes labels, label_map)",
                   "ravdess", ravdess_release, speakers_per_fold=2)


def test_ravdess_bad_names_and_files_are_problems(tmp_path, capsys):
    root = build_ravdess(tmp_path, ravdess_names(actors=range(1, 5)))
    write_clip(root / "Actor_01" / "03-01-09-01-01-01-01.wav")  # unknown emotion code
    write_clip(root / "Actor_01" / "take2.wav")
    write_clip(root / "Actor_02" / "03-01-03-01-01-01-03.wav")  # actor 03 in actor 02's folder
    (root / "Actor_04" / "03-01-03-01-01-01-04.wav").write_bytes(b"")  # empty
    (root / "Actor_04" / "03-01-04-01-01-01-04.wav").write_bytes(b"RIFF\x00\x00not audio")  # corrupt
    manifest = load_corpus("ravdess", root)
    problems = {p.path.rsplit("/", 1)[1]: p.problem for p in manifest.problems}
    assert sorted(problems) == ["03-01-03-01-01-01-03.wav", "03-01-03-01-01-01-04.wav", "03-01-04-01-01-01-04.wav",
                                "03-01-09-01-01-01-01.wav", "take2.wav"]
    assert "unknown RAVDESS emotion code '09'" in problems["03-01-09-01-01-01-01.wav"]
    assert "not a RAVDESS file name" in problems["take2.wav"]
    assert "in Actor_02" in problems["03-01-03-01-01-01-03.wav"]
    assert "empty file" in problems["03-01-03-01-01-01-04.wav"]
    assert len(manifest) == 238 and len(manifest.folds) == 4  # 4 actors: 4 folds of one
    assert [f.name for f in manifest.folds] == ["actor01", "actor02", "actor03", "actor04"]
    code, _, err = corpus_cli(["ravdess", root, "--no-audio-check"], capsys)
    assert code == 2 and len(error_lines(err)) == 6  # five files and the hint
    code, out, _ = corpus_cli(["ravdess", root, "--no-audio-check", "--skip-bad", "--json"], capsys)
    assert code == 0 and json.loads(out)["utterances"] == 238


def test_ravdess_release_one_level_down_and_no_files(tmp_path, capsys):
    build_ravdess(tmp_path / "Audio_Speech_Actors_01-24", ravdess_names(actors=range(1, 4)))
    assert len(load_corpus("ravdess", tmp_path)) == 180
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error("no RAVDESS wav files", "ravdess", empty)
    only_song = build_ravdess(tmp_path / "song", ravdess_names(actors=range(1, 4), channel="02"))
    one_line_error("no RAVDESS speech file", "ravdess", only_song)


# ------------------------------------------------------------------ CREMA-D
@pytest.fixture(scope="module")
def cremad_release(tmp_path_factory):
    """All 91 actors with the real naming, two sentences each (IEO with its levels, DFA at XX)."""
    return build_cremad(tmp_path_factory.mktemp("cremad"), cremad_names(sentences=("IEO", "DFA")))


def test_cremad_counts_labels_speakers_and_folds(cremad_release):
    manifest = load_corpus("cremad", cremad_release)
    assert len(manifest) == 91 * 22 and not manifest.problems
    assert manifest.labels == CREMAD_LABELS
    counts = manifest.counts()
    assert counts["labels"] == {label: 91 * (2 if label == "neutral" else 4) for label in CREMAD_LABELS}
    assert counts["speakers"] == {str(a): 22 for a in range(1001, 1092)}
    by_id = {u.utt_id: (u.label, u.speaker) for u in manifest.utterances}
    assert by_id["1001_DFA_ANG_XX"] == ("anger", "1001") and by_id["1091_IEO_HAP_HI"] == ("happiness", "1091")
    assert [len(f.test) for f in manifest.folds] == [10] + [9] * 9
    assert manifest.folds[0].name == "+".join(f"spk{a}" for a in range(1001, 1011))  # digit-only ids get spk
    assert manifest.folds[1].test[0] == "1011" and manifest.folds[-1].test[-1] == "1091"
    assert manifest.folds[0].valid == manifest.folds[1].test and manifest.folds[-1].valid == manifest.folds[0].test
    assert_speaker_independent(manifest)


def test_cremad_labels_merge_and_bad_names(tmp_path, capsys):
    root = build_cremad(tmp_path, cremad_names(actors=range(1001, 1007), sentences=("IEO", "ITS")), subfolder=False)
    for bad in ("1001_DFA_XYZ_XX.wav", "1001_ABC_ANG_XX.wav", "1001_DFA_ANG_ZZ.wav", "readme.wav"):
        write_clip(root / bad)
    (root / "1002_DFA_SAD_XX.wav").write_bytes(b"")
    manifest = load_corpus("cremad", root)
    assert sorted(p.path.rsplit("/", 1)[1] for p in manifest.problems) == [
        "1001_ABC_ANG_XX.wav", "1001_DFA_ANG_ZZ.wav", "1001_DFA_XYZ_XX.wav", "1002_DFA_SAD_XX.wav", "readme.wav"]
    assert len(manifest) == 6 * 22
    assert [f.name for f in manifest.folds] == ["spk1001", "spk1002", "spk1003", "spk1004", "spk1005", "spk1006"]
    picked = load_corpus("cremad", root, labels=["neutral", "anger"], label_map={"disgust": "anger"})
    assert picked.labels == ["neutral", "anger"] and picked.counts()["labels"] == {"neutral": 12, "anger": 48}
    message = one_line_error("unknown class 'calm' in labels", "cremad", root, labels=["calm"])
    assert message == ("cremad: unknown class 'calm' in labels (known: anger, disgust, fear, happiness, neutral, "
                       "sadness)")
    code, _, err = corpus_cli(["cremad", root, "--labels", "anger,surprise"], capsys)
    assert code == 2 and len(error_lines(err)) == 1 and "cremad: unknown class 'surprise'" in err


# ------------------------------------------------------------------ MSP-Podcast
PLAN = {"Train": ["11", "12", "Unknown"], "Development": ["21", "Unknown"], "Test1": ["31", "32", "Unknown"],
        "Test2": ["41", "Unknown"]}


@pytest.fixture
def msp_release(tmp_path):
    return build_msp_podcast(tmp_path, msp_rows(PLAN))


def test_msp_podcast_official_split_is_one_fold(msp_release):
    manifest = load_corpus("msp-podcast", msp_release)
    assert manifest.labels == ["anger", "happiness", "sadness", "neutral"] and not manifest.problems
    assert len(manifest) == 8 * 4  # 8 speakers (Unknown counted per split) of Train, Development, Test1
    (fold,) = manifest.folds
    assert fold.name == "Test1"
    assert fold.train == ("11", "12", "unknown-train") and fold.valid == ("21", "unknown-development")
    assert fold.test == ("31", "32", "unknown-test1")
    assert_speaker_independent(manifest)
    assert {u.group for u in manifest.utterances} == {"Train", "Development", "Test1"}
    assert manifest.utterances[0].path.parent == msp_release / "Audios"
    assert ("left out 48 utterance(s) of classes not selected (contempt 8, disgust 8, fear 8, no agreement 8, "
            "other 8, surprise 8)") in manifest.notes
    assert any(note.startswith("left out 20 utterance(s) of other splits (Test2 20)") for note in manifest.notes)
    other = load_corpus("msp-podcast", msp_release, test_set="Test2")
    assert other.folds[0].name == "Test2" and other.folds[0].test == ("41", "unknown-test2")
    one_line_error("test_set 'Test3' is not a test split", "msp-podcast", msp_release, test_set="Test3")


def test_msp_podcast_labels_and_speaker_in_two_splits(tmp_path):
    rows = msp_rows(PLAN, classes="AHSNCUFD")
    rows[0]["SpkrID"] = "21"  # a Development speaker also in Train: the split still rules
    root = build_msp_podcast(tmp_path, rows)
    manifest = load_corpus("msp-podcast", root, labels=["anger", "happiness", "sadness", "neutral", "surprise",
                                                          "fear", "disgust", "contempt"])
    assert len(manifest) == 8 * 8 and len(manifest.labels) == 8
    (fold,) = manifest.folds
    assert "21@Train" in fold.train and "21@Development" in fold.valid and "21" not in fold.valid
    assert any("appear in two splits (21)" in note for note in manifest.notes)
    merged = load_corpus("msp-podcast", root, label_map={"contempt": "anger"})
    assert merged.counts()["labels"]["anger"] == 16
    one_line_error("msp-podcast: unknown class 'boredom' in labels", "msp-podcast", root, labels=["boredom"])


def test_msp_podcast_bad_rows_and_missing_audio(msp_release, capsys):
    rows = msp_rows(PLAN)
    rows[1]["EmoClass"] = "Q"
    rows[2]["FileName"] = ""
    rows[3]["FileName"] = rows[0]["FileName"]
    build_msp_podcast(msp_release, rows)
    (msp_release / "Audios" / rows[11]["FileName"]).unlink()
    manifest = load_corpus("msp-podcast", msp_release)
    problems = sorted(str(p) for p in manifest.problems)
    assert len(problems) == 4
    assert any("labels_consensus.csv: line 3: unknown EmoClass 'Q'" in p for p in problems)
    assert any("line 4: empty FileName" in p for p in problems)
    assert any("line 5: MSP-PODCAST" in p and "repeats line 2" in p for p in problems)
    assert any(rows[11]["FileName"] in p and "audio file not found" in p for p in problems)
    code, _, err = corpus_cli(["msp-podcast", msp_release, "--no-audio-check"], capsys)
    assert code == 2 and len(error_lines(err)) == 5


def test_msp_podcast_errors_are_one_line(tmp_path, capsys):
    code, _, err = corpus_cli(["msp-podcast", tmp_path], capsys)
    assert code == 2 and len(error_lines(err)) == 1 and "labels_consensus.csv: MSP-Podcast labels not found" in err
    rows = msp_rows({"Train": ["1"], "Test1": ["2"]})
    root = build_msp_podcast(tmp_path, rows)
    one_line_error("no usable utterance in Split_Set Development", "msp-podcast", root)
    (root / "Labels" / "labels_consensus.csv").write_text("FileName,EmoClass\nx.wav,A\n")
    one_line_error("missing column(s) SpkrID, Split_Set", "msp-podcast", root)
    one_line_error("--speakers-per-fold: not an option of the msp-podcast corpus", "msp-podcast", root,
                   speakers_per_fold=3)
