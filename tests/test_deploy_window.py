"""Windowed prediction of long audio (issues 14, 19): window boundaries, the file label as the argmax of the mean
of window probabilities, batched windows against one-by-one, windows scored whole (never cropped), long files
without a window scored in windows of the training length and said so, short clips marked unreliable."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from serkd.deploy.predict import OnnxClassifier, predict, window_starts
from serkd.errors import SerkdError

RATE = 16000
LABELS = ["anger", "happiness", "sadness"]


class RampClassifier:
    """A stand-in with OnnxClassifier's interface: a window whose mean sample is below 0.7 weakly says anger,
    above strongly says happiness; it records the batches it is given."""

    labels = LABELS
    sample_rate = RATE
    takes_statistics = False

    def __init__(self, training_samples: int | None = None):
        self.batches: list[tuple[int, ...]] = []
        self.training_samples = training_samples

    def probs(self, wave: np.ndarray) -> np.ndarray:
        return np.array([0.4, 0.35, 0.25]) if wave.mean() < 0.7 else np.array([0.0, 1.0, 0.0])

    def probs_rows(self, waves: np.ndarray, statistics=None) -> np.ndarray:
        self.batches.append(waves.shape)
        return np.stack([self.probs(row) for row in waves])


def ramp(path, seconds: float):
    """Samples rising from 0 to 1: a window's mean tells where it lies."""
    n = round(seconds * RATE)
    sf.write(path, (np.arange(n) / n).astype(np.float32), RATE, subtype="FLOAT")
    return path


def test_window_starts_cover_the_signal_and_end_aligned():
    assert window_starts(72000, 32000, 16000) == [0, 16000, 32000, 40000]
    assert window_starts(64000, 32000, 32000) == [0, 32000]  # the end-aligned window is not repeated
    assert window_starts(20000, 32000, 16000) == [0]  # shorter than one window
    assert window_starts(32000, 32000, 16000) == [0]


def test_timeline_boundaries_and_label_is_argmax_of_the_mean(tmp_path):
    classifier = RampClassifier()
    (result,), problems = predict(classifier, [ramp(tmp_path / "long.wav", 4.5)], window=2, hop=1)
    assert not problems
    assert [(w["start"], w["end"]) for w in result["timeline"]] == [(0, 2), (1, 3), (2, 4), (2.5, 4.5)]
    assert classifier.batches == [(4, 32000)]  # one batch of the file's windows
    assert [w["label"] for w in result["timeline"]] == ["anger", "anger", "anger", "happiness"]
    (result,), _ = predict(classifier, [ramp(tmp_path / "four.wav", 4.0)], window=1)  # hop defaults to window
    assert [(w["start"], w["end"]) for w in result["timeline"]] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    # three windows weakly say anger, one strongly happiness: the mean says happiness (a vote would not)
    assert [w["label"] for w in result["timeline"]] == ["anger"] * 3 + ["happiness"]
    mean = np.mean([list(w["probs"].values()) for w in result["timeline"]], axis=0)
    assert result["probs"] == pytest.approx(dict(zip(LABELS, mean))) and result["label"] == "happiness"
    assert set(result) == {"path", "label", "probs", "timeline"}


def test_short_file_is_one_window_and_no_window_means_no_timeline(tmp_path):
    classifier = RampClassifier()
    path = ramp(tmp_path / "short.wav", 1.5)
    (result,), _ = predict(classifier, [path], window=2, hop=0.5)
    assert [(w["start"], w["end"]) for w in result["timeline"]] == [(0, 1.5)]
    (plain,), _ = predict(classifier, [path])
    assert set(plain) == {"path", "label", "probs"} and plain["label"] == "anger"


def test_short_clip_is_marked_unreliable_and_nothing_is_logged(tmp_path, caplog):
    classifier = RampClassifier()
    short, fine = ramp(tmp_path / "blip.wav", 0.3), ramp(tmp_path / "fine.wav", 0.8)
    with caplog.at_level(logging.DEBUG, logger="serkd"):
        results, _ = predict(classifier, [short, fine], window=0.25, hop=0.1)
    assert results[0]["unreliable"] is True and results[0]["reason"] == "only 0.30 s of audio (less than 0.5 s)"
    assert "unreliable" not in results[1] and "reason" not in results[1]
    assert not caplog.records  # the library marks; the CLI says it, once (test_cli_says_unreliable_once)
    (result,), _ = predict(classifier, [short], min_seconds=0.2)
    assert "unreliable" not in result


def test_long_file_without_window_is_scored_in_training_length_windows_and_says_so(tmp_path):
    classifier = RampClassifier(training_samples=RATE)  # a model trained on 1 s crops
    (result,), _ = predict(classifier, [ramp(tmp_path / "long.wav", 4.5)])
    assert classifier.batches == [(5, RATE)]  # 0-1, 1-2, 2-3, 3-4, 3.5-4.5: back to back, the last end-aligned
    assert result["windows"] == 5 and "longer than the model's training length (1 s)" in result["note"]
    assert "5 windows" in result["note"] and "timeline" not in result
    # four windows weakly anger, the last strongly happiness: the mean decides
    assert result["label"] == "happiness"
    classifier.batches.clear()
    (result,), _ = predict(classifier, [ramp(tmp_path / "short.wav", 0.9)])
    assert classifier.batches == [(1, round(0.9 * RATE))] and "note" not in result and "windows" not in result


def test_window_options_are_checked_first(tmp_path):
    classifier = RampClassifier()
    for options, match in (({"hop": 1.0}, "hop: only applies with a window"), ({"window": 0}, "window: must be"),
                           ({"window": 1, "hop": -1}, "hop: must be"), ({"min_seconds": -1}, "min_seconds")):
        with pytest.raises(SerkdError, match=match):
            predict(classifier, [tmp_path / "never-read.wav"], **options)


# ------------------------------------------------------------------ a real exported graph
@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """A tiny untrained student behind the real mel front-end (0.5 s crop), exported as serkd export does."""
    import onnx

    from serkd.data.features import FeatureConfig
    from serkd.deploy.export import Deployable, _set_metadata, to_onnx
    from serkd.deploy.frontend import FrontEnd

    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 5, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                  torch.nn.Flatten(), torch.nn.Linear(4, len(LABELS)))
    module = Deployable(FrontEnd(FeatureConfig("mel", 8000)), student).eval()
    proto = to_onnx(module, 8001)
    _set_metadata(proto, {"labels": json.dumps(LABELS), "sample_rate": str(RATE),
                          "features": json.dumps(FeatureConfig("mel", 8000).to_json())})
    path = tmp_path_factory.mktemp("graph") / "tiny.onnx"
    onnx.save(proto, str(path))
    return path


@pytest.mark.usefixtures("one_torch_thread")
def test_exported_graph_windows_in_batches_match_one_by_one(graph, tmp_path):
    classifier = OnnxClassifier(graph, threads=1)
    assert classifier.batched
    rng = np.random.default_rng(0)
    t = np.arange(round(2.1 * RATE)) / RATE
    wave = (np.sin(2 * np.pi * (200 + 300 * t) * t) * np.linspace(0.05, 0.5, len(t))
            + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    sf.write(tmp_path / "talk.wav", wave, RATE, subtype="FLOAT")
    (result,), problems = predict(classifier, [tmp_path / "talk.wav"], window=0.5, hop=0.25)
    assert not problems
    timeline = result["timeline"]
    assert [w["start"] for w in timeline] == [0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.6]
    assert all(w["end"] == pytest.approx(w["start"] + 0.5) for w in timeline)
    for w in timeline:  # the batch gives what each window alone gives
        alone = classifier.probs(wave[round(w["start"] * RATE) : round(w["start"] * RATE) + 8000])
        np.testing.assert_allclose(list(w["probs"].values()), alone, atol=1e-5)
        assert w["label"] == max(w["probs"], key=w["probs"].get)
    mean = np.mean([list(w["probs"].values()) for w in timeline], axis=0)
    np.testing.assert_allclose(list(result["probs"].values()), mean, atol=1e-6)
    assert result["label"] == LABELS[int(np.argmax(mean))]


@pytest.mark.usefixtures("one_torch_thread")
def test_a_window_longer_than_the_training_length_is_scored_whole(graph, tmp_path):
    classifier = OnnxClassifier(graph, threads=1)
    assert classifier.training_samples == 8000
    rng = np.random.default_rng(1)
    t = np.arange(3 * RATE) / RATE
    wave = (np.sin(2 * np.pi * 150 * t) * (t > 1.0) * (t < 1.3) + 0.01 * rng.standard_normal(len(t))).astype(
        np.float32)  # a burst off the centre of each 2 s window: a crop to the centre 0.5 s would miss it
    sf.write(tmp_path / "burst.wav", wave, RATE, subtype="FLOAT")
    (result,), _ = predict(classifier, [tmp_path / "burst.wav"], window=2, hop=1)
    first = result["timeline"][0]
    assert (first["start"], first["end"]) == (0, 2)
    whole = classifier.probs(wave[: 2 * RATE])
    np.testing.assert_allclose(list(first["probs"].values()), whole, atol=1e-5)
    centre = classifier.probs(wave[6000:14000])
    assert np.abs(whole - centre).max() > 1e-3  # scoring whole is not the centre crop
    # without a window the 3 s file is 6 windows of the 0.5 s training length, their mean
    (plain,), _ = predict(classifier, [tmp_path / "burst.wav"])
    expected = np.mean([classifier.probs(wave[s : s + 8000]) for s in range(0, 3 * RATE, 8000)], axis=0)
    np.testing.assert_allclose(list(plain["probs"].values()), expected, atol=1e-5)
    assert plain["windows"] == 6
