"""Every feature kind x normalisation computed in the exported graph as in torch (issue 17): ONNX = torch
within 1e-4 on the probabilities, for waves shorter than, equal to and longer than the feature length, and
the torch side the same as training's batch-time normalisation of the cached features; then a tiny student
trained on logmel with speaker normalisation: trains, exports (int8 <= 250 KB), predicts with a speaker's
statistics from a folder or from the call, and the graph's statistics equal training's."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from torch import nn

from serkd.data.features import FeatureConfig, compute_features, real_frames
from serkd.data.normalize import NORMALIZE_CHOICES, normalization_for_rows
from serkd.data.statistics import Moments
from serkd.data.store import MappedFeatures
from serkd.deploy.frontend import FeatureNormalizer, FrontEnd, feature_moments

LENGTH = 8000
PROB_TOLERANCE = 1e-4
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def waves() -> list[np.ndarray]:
    """Shorter than, equal to and longer than the feature length, at different levels."""
    rng = np.random.default_rng(5)
    out = []
    for n, level in ((3000, 0.05), (LENGTH, 0.3), (2 * LENGTH + 77, 0.8)):
        t = np.arange(n) / 16000
        out.append((level * np.sin(2 * np.pi * (180 + 90 * t) * t) * (1 + np.sin(2 * np.pi * 3 * t))
                    + 0.02 * rng.standard_normal(n)).astype(np.float32))
    return out


def corpus_record(kind: str) -> dict:
    """Plausible statistics: those of the test waves' real frames."""
    config = FeatureConfig(kind, LENGTH)
    moments = Moments.zero(FrontEnd(config).output_bins)
    for wave in waves():
        x = compute_features(wave, config, whole=True).astype(np.float64)[:, : real_frames(len(wave), config, True)]
        moments = moments + Moments(x.shape[1], x.sum(1), (x * x).sum(1))
    return {"frames": moments.count, "speakers": ["a"], **{k: v for k, v in moments.statistics().to_json().items()
                                                              if k != "frames"}}


class EveryNormalisation(nn.Module):
    """One front-end, the four normalisations side by side, one tiny student: what each gives."""

    def __init__(self, kind: str):
        super().__init__()
        self.frontend = FrontEnd(FeatureConfig(kind, LENGTH))
        record = corpus_record(kind)
        self.norms = nn.ModuleList(FeatureNormalizer({"normalize": n, "corpus": record}, kind,
                                                     self.frontend.output_bins) for n in NORMALIZE_CHOICES)
        torch.manual_seed(0)  # a small student: the normalisation, not the network, is under test
        self.student = nn.Sequential(nn.Conv2d(1, 6, 5, stride=(4, 2)), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                     nn.Flatten(), nn.Linear(6, 4)).eval()

    def forward(self, wave, mean, std):
        features = self.frontend(wave)
        frames = self.frontend.real_frames(wave)
        outs = []
        for norm in self.norms:
            x = norm(features, frames, mean, std) if norm.takes_statistics else norm(features, frames)
            outs += [self.student(x.unsqueeze(1) * 1.0).softmax(-1), x]
        return (*outs, *feature_moments(features, frames))


@pytest.fixture(scope="module", params=["mel", "mfcc", "logmel"])
def exported(request):
    from serkd.deploy.predict import session

    module = EveryNormalisation(request.param).eval()
    batch, samples = torch.export.Dim("batch"), torch.export.Dim("samples")
    example = (torch.randn(2, LENGTH + 1), module.norms[0].mean.clone() if hasattr(module.norms[0], "mean")
               else module.norms[2].mean.clone(), module.norms[2].std.clone())
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with torch.no_grad():
        program = torch.onnx.export(module, example, dynamo=True, opset_version=20, verbose=False,
                                    input_names=["waveform", "feature_mean", "feature_std"],
                                    dynamic_shapes=({0: batch, 1: samples}, None, None))
    return request.param, module, session(program.model_proto.SerializeToString(), threads=1)


def test_every_kind_and_normalisation_onnx_equals_torch(exported):
    kind, module, runner = exported
    corpus = module.norms[2]
    given = (corpus.mean.numpy() + 0.3 * corpus.std.numpy(), 1.2 * corpus.std.numpy())  # a speaker's
    for wave in waves():
        for rows in (wave[None], np.stack([wave, wave[::-1].copy()])):
            with torch.no_grad():
                expected = [t.numpy() for t in module(torch.from_numpy(rows), *map(torch.from_numpy, given))]
            got = runner.run(None, {"waveform": rows, "feature_mean": given[0], "feature_std": given[1]})
            for i, name in enumerate(NORMALIZE_CHOICES):
                np.testing.assert_allclose(got[2 * i], expected[2 * i], atol=PROB_TOLERANCE, err_msg=f"{kind} {name}")
                scale = max(1.0, float(np.abs(expected[2 * i + 1]).max()))
                assert np.abs(got[2 * i + 1] - expected[2 * i + 1]).max() < 1e-4 * scale, f"{kind} {name}"
            count, total, squares = got[-3:]
            assert count[0] == real_frames(len(wave), FeatureConfig(kind, LENGTH), whole=True)
            np.testing.assert_allclose(total, expected[-2], rtol=1e-4, atol=1e-2)
            np.testing.assert_allclose(squares, expected[-1], rtol=1e-4, atol=1e-1)


@pytest.mark.parametrize("kind", ["mel", "logmel"])
def test_graph_normalisation_is_training_normalisation(kind):
    """On the same raw features the graph's normaliser (built from the record training writes to
    checkpoint.json) gives exactly what training's batch-time wrapper gave: one computation, two callers."""
    from serkd.data.manifest import Manifest, Utterance

    config = FeatureConfig(kind, LENGTH)
    short, equal = waves()[:2]
    cached = np.stack([compute_features(w, config) for w in (short, equal)])
    frames = np.array([real_frames(len(w), config) for w in (short, equal)])
    manifest = Manifest("x", None, ["a"], [Utterance(str(j), f"{j}.wav", "a", "spk") for j in range(2)])
    for normalize in NORMALIZE_CHOICES:
        train = normalization_for_rows(normalize, config, MappedFeatures(cached), manifest, frames, np.arange(2),
                                       report_speakers=("spk",))
        record = json.loads(json.dumps(train.record))  # as checkpoint.json holds it
        graph = FeatureNormalizer(record, kind, cached.shape[1])
        given = record.get("speakers", {}).get("spk")
        for j in range(2):
            x = torch.from_numpy(cached[j : j + 1])
            with torch.no_grad():
                got = graph(x, int(frames[j]), *(torch.tensor(given[k]) for k in ("mean", "std"))) if given \
                    else graph(x, int(frames[j]))
            assert torch.equal(got, train.features[np.array([j])][:, 0]), (kind, normalize)


# ------------------------------------------------------------------ the tiny student, end to end
@pytest.fixture(scope="module")
def tiny_run(tiny_synth, tmp_path_factory):
    """``tiny`` on logmel with speaker normalisation, 1 epoch, fold spk00, exported with --int8 and scored."""
    import contextlib
    import io

    from serkd.cli import main

    out = tmp_path_factory.mktemp("tiny_run")
    argv = ["train", "--corpus", "synth", "--root", tiny_synth, "--length", "16000", "--epochs", "1", "--folds", "0",
            "--student", "tiny", "--features", "logmel", "--normalize", "speaker", "--out", out]
    assert main([str(a) for a in argv]) == 0
    graph = out / "tiny.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["export", str(out / "spk00"), "--out", str(graph), "--int8", "--corpus", "synth", "--root",
                     str(tiny_synth), "--json"])
    assert code == 0
    return out, json.loads(printed.getvalue())


def test_tiny_trains_speaker_normalised_and_says_so(tiny_run, capsys):
    from serkd.cli import main

    out, _ = tiny_run
    result = json.loads((out / "spk00" / "results.json").read_text())
    assert result["student"] == "tiny" and result["normalize"] == "speaker"
    assert "speaker-normalised" in result["marks"]
    record = json.loads((out / "spk00" / "checkpoint.json").read_text())["normalization"]
    assert record["normalize"] == "speaker" and set(record["speakers"]) == {"spk00"}
    assert record["corpus"]["speakers"] == ["spk02", "spk03"]  # the training speakers only
    assert main(["report", str(out), "--format", "md"]) == 0
    assert "speaker-normalised: features standardised with each speaker's own statistics" in capsys.readouterr().out


def test_tiny_exports_small_and_matches_torch(tiny_run):
    from serkd.deploy.predict import OnnxClassifier

    _, summary = tiny_run
    fp32, int8 = summary["graphs"]["fp32"], summary["graphs"]["int8"]
    assert summary["max_prob_difference"] <= PROB_TOLERANCE  # default and given statistics, moments too
    assert int8["bytes"] <= 250_000 and fp32["bytes"] < 400_000
    for graph in (fp32, int8):
        assert 0 <= graph["ua"] <= 1 and graph["n_test"] == 12
        classifier = OnnxClassifier(graph["path"])
        assert classifier.takes_statistics and classifier.normalization["normalize"] == "speaker"


def test_speaker_statistics_from_the_graph_equal_trainings(tiny_run, tiny_synth):
    from serkd.deploy.predict import OnnxClassifier, speaker_statistics

    out, summary = tiny_run
    record = json.loads((out / "spk00" / "checkpoint.json").read_text())["normalization"]["speakers"]["spk00"]
    clips = sorted((tiny_synth / "wav" / "spk00").glob("*.wav"))
    stats, seconds, problems = speaker_statistics(OnnxClassifier(summary["graphs"]["fp32"]["path"]), clips)
    assert not problems and stats.frames == record["frames"] and 6 < seconds < 12
    np.testing.assert_allclose(stats.mean, record["mean"], atol=2e-3)  # onnxruntime front-end vs librosa
    np.testing.assert_allclose(stats.std, record["std"], rtol=2e-3)


def test_predict_with_a_speakers_clips_or_the_call_and_marks_short_clips(tiny_run, tiny_synth, tmp_path, capsys):
    import soundfile as sf
    from conftest import run_cli

    _, summary = tiny_run
    model = summary["graphs"]["int8"]["path"]
    folder = tiny_synth / "wav" / "spk00"
    code, out, err = run_cli(["predict", model, folder, "--speaker", folder, "--json"], capsys)
    assert code == 0, err
    given = json.loads(out)
    assert len(given) == 12 and all("from 12 clip(s) of the speaker" in r["speaker_statistics"] for r in given)
    code, out, _ = run_cli(["predict", model, folder, "--json"], capsys)
    from_call = json.loads(out)
    assert all("from the 12 file(s) of this call" in r["speaker_statistics"] for r in from_call)
    for a, b in zip(given, from_call):  # the same clips: the same statistics, the same probabilities
        assert a["probs"] == pytest.approx(b["probs"], abs=1e-6)
    blip = tmp_path / "blip.wav"
    sf.write(blip, 0.3 * np.sin(np.arange(1600) / 3.0).astype(np.float32), 16000)  # 0.1 s
    code, out, err = run_cli(["predict", model, blip, "--speaker", folder, "--json"], capsys)
    (result,) = json.loads(out)
    assert code == 0 and result["unreliable"] is True and result["reason"].startswith("only 0.10 s of audio")
    assert err.count("unreliable") == 1 and err.count("\n") == 2  # the warning once, the statistics' source

