"""Audio robustness: any rate and channel count in; every bad file is one line naming it; absent test classes."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import run_cli
from corpus_builders import error_lines, wav_bytes, write_clip, write_csv

from serkd.data import audio
from serkd.data.audio import load_audio
from serkd.train.metrics import wa_ua


@pytest.fixture
def fresh_resample_notes(monkeypatch):
    """The 'resampling' note is said once per rate and process: give each test a process of its own."""
    monkeypatch.setattr(audio, "_resample_noted", set())


def test_any_rate_is_resampled_to_16k_and_said_once_per_rate(tmp_path, caplog, fresh_resample_notes):
    for i, rate in enumerate([44100, 44100, 22050, 8000, 16000]):
        (tmp_path / f"{i}.wav").write_bytes(wav_bytes(0.5, rate=rate, seed=i))
    with caplog.at_level(logging.WARNING, logger="serkd.data.audio"):
        lengths = [len(load_audio(tmp_path / f"{i}.wav")) for i in range(5)]
    assert lengths == [8000] * 5
    notes = [r.getMessage() for r in caplog.records if "resampling" in r.getMessage()]
    assert len(notes) == 3 and [n.split()[3] for n in notes] == ["44100", "22050", "8000"]
    assert "0.wav" in notes[0]


def test_multichannel_is_mixed_to_mono(tmp_path):
    rng = np.random.default_rng(0)
    left = (0.1 * rng.standard_normal(1600)).astype(np.float32)
    sf.write(tmp_path / "stereo.wav", np.stack([left, 0.5 * left], axis=1), 16000, subtype="FLOAT")
    sf.write(tmp_path / "quad.wav", np.stack([left] * 4, axis=1), 16000, subtype="FLOAT")
    assert np.allclose(load_audio(tmp_path / "stereo.wav"), 0.75 * left, atol=1e-7)
    assert np.allclose(load_audio(tmp_path / "quad.wav"), left, atol=1e-7)


def _corpus(root, speakers=4, labels=("ang", "hap", "sad"), per=2, skip=()):
    rows = []
    for s in range(speakers):
        for label in labels:
            for k in range(per):
                if (f"s{s}", label) in skip:
                    continue
                rel = f"wav/s{s}_{label}_{k}.wav"
                write_clip(root / rel, s + k)
                rows.append({"path": rel, "label": label, "speaker": f"s{s}"})
    return write_csv(root / "list.csv", rows)


def _nan(path):
    wave = (0.1 * np.random.default_rng(0).standard_normal(1600)).astype(np.float32)
    wave[100] = np.nan
    sf.write(path, wave, 16000, subtype="FLOAT")


DAMAGE = {
    "corrupt": (lambda p: p.write_bytes(b"RIFF\x00\x00garbage" * 10), "cannot decode audio"),
    "empty": (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    "no samples": (lambda p: sf.write(p, np.zeros(0, dtype=np.float32), 16000), "audio has no samples"),
    "all zeros": (lambda p: sf.write(p, np.zeros(1600, dtype=np.float32), 16000), "all zeros"),
    "NaN": (_nan, "NaN or infinite"),
    "missing": (lambda p: p.unlink(), "audio file not found"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_each_bad_file_is_one_line_naming_it(tmp_path, capsys, case):
    table = _corpus(tmp_path)
    bad = tmp_path / "wav" / "s1_hap_0.wav"
    damage, problem = DAMAGE[case]
    damage(bad)
    code, _, err = run_cli(["corpus", "csv", table], capsys)
    lines = error_lines(err)
    assert code == 2 and lines[0].startswith(f"serkd: error: {bad}: ") and problem in lines[0], err
    assert len(lines) == 2 and "1 bad input(s)" in lines[1]
    code, out, err = run_cli(["corpus", "csv", table, "--json", "--skip-bad"], capsys)
    assert code == 0 and json.loads(out)["utterances"] == 23 and "skipped 1 bad input(s)" in err


def test_all_problems_are_listed_together(tmp_path, capsys):
    table = _corpus(tmp_path)
    bad = sorted((tmp_path / "wav").glob("*.wav"))[: len(DAMAGE)]
    for path, (damage, _) in zip(bad, DAMAGE.values()):
        damage(path)
    text = table.read_text().replace("s3_sad_1.wav,sad", "s3_sad_1.wav,fear")
    table.write_text(text)
    code, _, err = run_cli(["corpus", "csv", table, "--labels", "ang,hap,sad"], capsys)
    lines = error_lines(err)
    assert code == 2 and len(lines) == len(DAMAGE) + 2, err
    for path, (_, problem) in zip(bad, DAMAGE.values()):
        assert any(str(path) in line and problem in line for line in lines), (path, err)
    assert any("s3_sad_1.wav" in line and "unknown label 'fear'" in line for line in lines), err
    assert lines[-1].startswith(f"serkd: error: 7 bad input(s) in {table} (7 of 24 files)")
    assert lines[-1].endswith("--skip-bad drops them")
    code, out, err = run_cli(["corpus", "csv", table, "--labels", "ang,hap,sad", "--skip-bad", "--json"], capsys)
    assert code == 0 and json.loads(out)["utterances"] == 24 - 7 and "skipped 7 bad input(s)" in err


def test_the_cli_says_resampling_once_per_rate(tmp_path):
    rows = []
    for i, rate in enumerate([44100, 44100, 44100, 22050, 22050, 16000]):
        for s in range(3):
            rel = f"wav/{s}_{i}.wav"
            (tmp_path / "wav").mkdir(exist_ok=True)
            (tmp_path / rel).write_bytes(wav_bytes(0.1, rate=rate, seed=i))
            rows.append({"path": rel, "label": "ab"[i % 2], "speaker": f"s{s}"})
    table = write_csv(tmp_path / "list.csv", rows)
    done = subprocess.run([sys.executable, "-m", "serkd", "corpus", "csv", str(table)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stderr.splitlines() if "resampling" in line]
    assert len(notes) == 2, done.stderr
    assert notes[0].startswith("serkd: resampling audio from 44100 Hz to 16000 Hz")
    assert notes[1].startswith("serkd: resampling audio from 22050 Hz to 16000 Hz")


def test_ua_is_over_the_classes_present():
    targets = np.array([0, 0, 1, 1])
    predictions = np.array([0, 1, 1, 2])  # class 2 is predicted but absent from the targets
    wa, ua = wa_ua(targets, predictions)
    assert wa == pytest.approx(0.5) and ua == pytest.approx((0.5 + 0.5) / 2)


def test_class_absent_from_a_test_fold_is_reported(tmp_path, capsys):
    table = _corpus(tmp_path, skip={("s0", "sad")}, per=3)
    out = tmp_path / "run"
    argv = ["train", "--corpus", "csv", "--root", table, "--folds", "0", "--epochs", "1", "--length", "4000",
            "--out", out]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "class(es) sad absent from the test set; UA is over the classes present" in " ".join(err.split())
    result = json.loads((out / "s0" / "results.json").read_text())
    assert result["absent_test_classes"] == ["sad"] and result["n_test"] == 6
    confusion = np.array(result["confusion"])
    recalls = [confusion[c, c] / confusion[c].sum() for c in (0, 1)]
    assert result["ua"] == pytest.approx(np.mean(recalls))
