"""Windowed prediction of long audio (issue 14): window boundaries, the file label as the argmax of the mean
of window probabilities, batched windows against one-by-one, the short-clip warning."""

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

    def __init__(self):
        self.batches: list[tuple[int, ...]] = []

    def probs(self, wave: np.ndarray) -> np.ndarray:
        return np.array([0.4, 0.35, 0.25]) if wave.mean() < 0.7 else np.array([0.0, 1.0, 0.0])

    def probs_rows(self, waves: np.ndarray) -> np.ndarray:
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


def test_short_clip_gets_a_warning_logged_once(tmp_path, caplog):
    classifier = RampClassifier()
    short, fine = ramp(tmp_path / "blip.wav", 0.3), ramp(tmp_path / "fine.wav", 0.8)
    with caplog.at_level(logging.WARNING, logger="serkd.deploy.predict"):
        results, _ = predict(classifier, [short, fine], window=0.25, hop=0.1)
    assert "only 0.30 s of audio (less than 0.5 s)" in results[0]["warning"] and str(short) in results[0]["warning"]
    assert "warning" not in results[1]
    assert [r.getMessage() for r in caplog.records] == [results[0]["warning"]]
    (result,), _ = predict(classifier, [short], min_seconds=0.2)
    assert "warning" not in result


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
    _set_metadata(proto, {"labels": json.dumps(LABELS), "sample_rate": str(RATE)})
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
