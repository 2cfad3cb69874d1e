"""Deploy: the in-graph front-end against librosa, export parity, int8, predict, bench (issue 7).

Tolerances
- Front-end vs librosa (``compute_features``), dB features: both sides compute in float32 (librosa
  rounds its float64 FFT to complex64, then mel and log in float32); float32 matmuls give a
  relative power error of ~1e-6 of a frame's energy, i.e. ~1e-5 dB for strong bins and up to
  ~1e-3 dB for bins 60-80 dB below the utterance maximum (the worst measured: 2.4e-3 dB, a chirp).
  Bound: 1e-2 dB on every bin, floor included (the -80 dB floor is the same op on both sides).
  MFCCs are an orthonormal DCT of those dB values, so a per-bin error e bounds each coefficient
  by sqrt(128) e; measured < 1e-3, bound 1e-2. log-mel (natural log of power + 1e-6): the same relative
  power error is ~1e-5 nats on strong bins; bins near the 1e-6 floor of a pure tone or chirp reach 2e-3
  (measured); bound 1e-2.
- onnxruntime vs torch probabilities: 1e-4 absolute (measured ~1e-7).
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import run_cli

from serkd.data.audio import load_audio
from serkd.data.features import FeatureConfig, compute_features, pad_to
from serkd.deploy.export import INPUT, frontend_nodes, load_deployable, read_metadata
from serkd.deploy.frontend import FrontEnd, normalise_pad
from serkd.deploy.predict import OnnxClassifier

DB_TOLERANCE = 1e-2
PROB_TOLERANCE = 1e-4
LENGTH = 8000  # the tiny run's crop length (0.5 s)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def signals(tiny_synth, n: int = 80000) -> list[np.ndarray]:
    """Synthetic speech (utterances strung together past the crop length), a chirp, a tone, noise, a short one."""
    speech = np.concatenate([load_audio(p) for p in sorted((tiny_synth / "wav").rglob("*.wav"))[:14]])
    t = np.arange(n) / 16000
    rng = np.random.default_rng(0)
    return [speech[: n + 12345], speech[:20000], np.sin(2 * np.pi * (100 * t + 3000 * t**2)).astype(np.float32),
            np.sin(2 * np.pi * 440 * t).astype(np.float32), rng.standard_normal(n // 2).astype(np.float32),
            rng.standard_normal(700).astype(np.float32)]


@pytest.mark.parametrize("kind", ["mel", "mfcc", "logmel"])
def test_frontend_matches_librosa(kind, tiny_synth):
    config = FeatureConfig(kind, 80000)
    frontends = {"real-input factorised": FrontEnd(config), "factorised": FrontEnd(config, real_input=False),
                 "direct": FrontEnd(config, factorised=False)}
    assert type(frontends["real-input factorised"].stft).__name__ == "RealFactorisedSTFT"
    assert type(frontends["factorised"].stft).__name__ == "FactorisedSTFT"
    for wave in signals(tiny_synth):
        expected = compute_features(wave, config, whole=True)  # no crop: the first signal is longer than 5 s
        for name, frontend in frontends.items():
            with torch.no_grad():
                got = frontend(torch.from_numpy(wave)[None])[0].numpy()
            assert got.shape == expected.shape
            assert np.abs(got - expected).max() < DB_TOLERANCE, f"{name} DFT, {len(wave)} samples"


def test_normalise_pad_matches_numpy_and_never_crops():
    rng = np.random.default_rng(1)
    for n in (1, 5, 7999, 8000, 8001, 8002, 20001):
        waves = (rng.standard_normal((2, n)) * 0.1 + 0.3).astype(np.float32)
        got = normalise_pad(torch.from_numpy(waves), 8000, normalise=True).numpy()
        raw = normalise_pad(torch.from_numpy(waves), 8000, normalise=False).numpy()
        assert got.shape == raw.shape == (2, max(n, 8000))
        for row, kept, wave in zip(got, raw, waves):
            x = wave.astype(np.float64)
            np.testing.assert_allclose(row, pad_to((x - x.mean()) / np.sqrt(x.var() + 1e-7), 8000), atol=1e-6)
            np.testing.assert_array_equal(kept, pad_to(wave, 8000))


def test_logmel_keeps_level_and_real_frames_are_counted():
    config = FeatureConfig("logmel", 8000)
    t = np.arange(4000) / 16000
    wave = (0.1 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    quiet, loud = compute_features(wave, config), compute_features(4 * wave, config)
    frames = 16  # ceil(4000 / 256): the frames centred on real samples
    # 12 dB louder is log(16) = 2.77 nats more in every bin with energy, and padding stays at log(1e-6)
    strong = quiet[:, 2 : frames - 3] > np.log(1e-6) + 9  # bins far above the floor (power > 8000 eps)
    assert strong.sum() > 20
    np.testing.assert_allclose((loud - quiet)[:, 2 : frames - 3][strong], np.log(16.0), atol=1e-3)
    assert np.all(quiet[:, frames + 2:] == np.float32(np.log(np.float32(1e-6))))
    frontend = FrontEnd(config)
    assert frontend.real_frames(torch.zeros(1, 4000)) == frames == int(np.ceil(4000 / 256))
    mel = compute_features(wave, FeatureConfig("mel", 8000))
    np.testing.assert_allclose(mel, compute_features(4 * wave, FeatureConfig("mel", 8000)), atol=1e-3)  # level gone


@pytest.fixture(scope="module")
def trained(tiny_synth, tmp_path_factory):
    from serkd.cli import main

    out = tmp_path_factory.mktemp("deploy_run")
    argv = ["train", "--corpus", "synth", "--root", str(tiny_synth), "--length", str(LENGTH), "--epochs", "1",
            "--folds", "0", "--out", str(out)]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def exported(trained, tiny_synth, tmp_path_factory):
    """fp32 + int8 graphs of fold 0, evaluated on its test speaker: the CLI's JSON summary."""
    import contextlib
    import io

    from serkd.cli import main

    out = tmp_path_factory.mktemp("graphs") / "model.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["export", str(trained / "spk00"), "--out", str(out), "--int8", "--int8-static", "--corpus",
                     "synth", "--root", str(tiny_synth), "--json"])
    assert code == 0
    return json.loads(printed.getvalue())


def test_export_matches_torch_and_carries_metadata(exported, trained, tiny_synth):
    graph = OnnxClassifier(exported["graphs"]["fp32"]["path"])
    module, meta = load_deployable(trained / "spk00")
    run = json.loads((trained / "run.json").read_text())
    assert graph.labels == run["labels"] == meta["labels"]
    assert graph.sample_rate == 16000
    props = graph.metadata
    assert json.loads(props["features"]) == run["features"]
    assert props["source_fold"] == "spk00" and json.loads(props["source_test_speakers"]) == ["spk00"]
    assert props["source_data_hash"] == run["data_hash"]
    assert props["source_git_commit"] == run["provenance"]["git_commit"]
    assert props["source_fold_dir"] == str((trained / "spk00").resolve())
    assert exported["max_prob_difference"] <= PROB_TOLERANCE
    # dynamic length (shorter, equal, longer than the crop) and a batch of two rows
    for wave in signals(tiny_synth, n=3 * LENGTH):
        with torch.no_grad():
            expected = module(torch.from_numpy(wave)[None]).numpy()[0]
        np.testing.assert_allclose(graph.probs(wave), expected, atol=PROB_TOLERANCE)
    pair = np.stack([signals(tiny_synth)[0][:9000], signals(tiny_synth)[2][:9000]])
    with torch.no_grad():
        expected = module(torch.from_numpy(pair)).numpy()
    got = graph.session.run(None, {INPUT: pair})[0]
    np.testing.assert_allclose(got, expected, atol=PROB_TOLERANCE)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)


def test_int8_is_smaller_keeps_a_float_frontend_and_reports_wa_ua(exported):
    fp32, int8 = exported["graphs"]["fp32"], exported["graphs"]["int8"]
    assert int8["bytes"] < 0.5 * fp32["bytes"]
    for graph in (fp32, int8):
        assert 0 <= graph["wa"] <= 1 and 0 <= graph["ua"] <= 1 and graph["n_test"] == 12
    import onnx

    proto = onnx.load(int8["path"])
    assert read_metadata(proto)["quantization"].startswith("int8")
    front = set(frontend_nodes(onnx.load(fp32["path"])))  # the quantizer keeps the excluded nodes' names
    kept = [node.op_type for node in proto.graph.node if node.name in front]
    assert len(kept) == len(front) and "MatMul" in kept
    # the student's weights are int8 (rebuilt as float32 when onnxruntime loads the graph), the front-end's float
    int8_weights = [init for init in proto.graph.initializer if init.data_type == onnx.TensorProto.INT8]
    assert int8_weights and {node.op_type for node in proto.graph.node} >= {"Cast", "Conv"}
    wave = np.random.default_rng(2).standard_normal(12000).astype(np.float32)
    p32, p8 = OnnxClassifier(fp32["path"]).probs(wave), OnnxClassifier(int8["path"]).probs(wave)
    assert np.abs(p32 - p8).max() < 0.05


def test_int8_static_is_qdq_calibrated_on_training_speakers_with_a_float_frontend(exported):
    import onnx

    fp32, static = exported["graphs"]["fp32"], exported["graphs"]["int8_static"]
    assert static["bytes"] < 0.5 * fp32["bytes"] and static["n_test"] == 12 and 0 <= static["ua"] <= 1
    assert static["calibration_clips"] == 24  # the fold's 2 training speakers x 12 (all: fewer than 64)
    proto = onnx.load(static["path"])
    props = read_metadata(proto)
    assert props["quantization"].startswith("int8 static QDQ") and props["labels"] == read_metadata(fp32["path"])[
        "labels"]
    ops = [node.op_type for node in proto.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    producer = {out: node for node in proto.graph.node for out in node.output}
    # the front-end's matmuls read float tensors, not dequantized ones
    front_mm = [n for n in proto.graph.node if n.op_type == "MatMul" and n.name in set(frontend_nodes(proto))]
    assert front_mm and all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear"
                            for n in front_mm for i in n.input)
    # Light-SERNet+'s four path convs see the 1-channel features: float32; the convs after them are int8
    weights = {init.name: init for init in proto.graph.initializer}
    reads_int8 = {node.name: getattr(producer.get(node.input[1]), "op_type", None) == "DequantizeLinear"
                  for node in proto.graph.node if node.op_type == "Conv"}
    single = {node.name for node in proto.graph.node if node.op_type == "Conv" and node.input[1] in weights
              and weights[node.input[1]].dims[1] == 1}
    assert len(single) == 4 and not any(reads_int8[name] for name in single)
    assert len(reads_int8) > 4 and all(reads_int8[name] for name in set(reads_int8) - single)
    assert "4 single-input-channel or depthwise convolution(s) kept float32" in props["quantization"]
    wave = np.random.default_rng(2).standard_normal(12000).astype(np.float32)
    p32, p8 = OnnxClassifier(fp32["path"]).probs(wave), OnnxClassifier(static["path"]).probs(wave)
    assert np.abs(p32 - p8).max() < 0.1


def test_int8_static_needs_the_corpus(trained, tmp_path, capsys):
    code, _, err = run_cli(["export", trained / "spk00", "--out", tmp_path / "m.onnx", "--int8-static"], capsys)
    assert code == 2 and "calibrates on the fold's training utterances" in err and err.count("\n") == 1


def test_predict_any_rate_and_channels_and_bad_files(exported, tiny_synth, tmp_path, capsys):
    model = exported["graphs"]["fp32"]["path"]
    source = sorted((tiny_synth / "wav" / "spk00").glob("*.wav"))[0]
    wave = load_audio(source)
    stereo = tmp_path / "stereo44k.flac"
    t = np.arange(int(len(wave) * 44100 / 16000)) / 44100
    sf.write(stereo, np.stack([np.interp(t, np.arange(len(wave)) / 16000, wave)] * 2, axis=1), 44100)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00not audio at all")
    folder = tiny_synth / "wav" / "spk01"
    code, out, err = run_cli(["predict", model, source, bad, stereo, folder, tmp_path / "missing.wav", "--json"],
                             capsys)
    assert code == 2
    results = json.loads(out)
    assert [r["path"] for r in results[:2]] == [str(source), str(stereo)]
    assert len(results) == 2 + len(list(folder.glob("*.wav")))
    for r in results:  # clips of 0.5-1 s, the model trained on 0.5 s: longer ones are scored in windows of it
        assert set(r) - {"windows", "note"} == {"path", "label", "probs"}
        assert r["label"] == max(r["probs"], key=r["probs"].get)
        assert abs(sum(r["probs"].values()) - 1) < 1e-5
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("serkd: error: ") for line in lines)
    assert str(bad) in lines[0] and "missing.wav" in lines[1] and "Traceback" not in err
    # the 44.1 kHz stereo copy is resampled outside the graph: close to the 16 kHz original
    assert np.abs(np.array(list(results[1]["probs"].values())) - list(results[0]["probs"].values())).max() < 0.05
    code, out, err = run_cli(["predict", model, source], capsys)
    assert code == 0 and str(source) in out and results[0]["label"] in out and err == ""


def test_bench_quick(exported, capsys, tmp_path):
    model = exported["graphs"]["fp32"]["path"]
    code, out, err = run_cli(["bench", model, "--teacher", "tiny", "--quick", "--seconds", "1", "--threads", "1",
                              "--json", "--out", tmp_path / "bench.json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert json.loads((tmp_path / "bench.json").read_text()) == result
    student, teacher = result["student"], result["teacher"]
    assert student["model"] == "lightsernet" and student["flops"]["total"] > student["flops"]["frontend"] > 0
    assert student["size_bytes"] == exported["graphs"]["fp32"]["bytes"]
    for runtime in ("onnx", "torch"):
        one = student[runtime]["1"]
        assert one["runs"] == 3 and 0 < one["p50_ms"] <= one["p95_ms"] and one["x_realtime"] > 0
        assert one["cpu_p50_ms"] > 0 and one["x_realtime_cpu"] == pytest.approx(1000 / one["cpu_p50_ms"])
    assert isinstance(result["cpu_flags"], list) and "CPU time per clip" in result["targets"][0]["target"]
    assert teacher["flops"] > 0 and teacher["torch"]["1"]["p50_ms"] > 0 and "not WavLM Base+" in teacher["note"]
    assert len(result["targets"]) == 3 and all(isinstance(row["met"], bool) for row in result["targets"])
    first, second = result["headline"]
    assert "faster than real time on one CPU thread: 1 s of audio in " in first and " ms" in first
    assert "the student is" in second and "faster" in second and "smaller" in second
    code, out, _ = run_cli(["bench", model, "--teacher", "none", "--quick", "--seconds", "1", "--threads", "1"],
                           capsys)
    assert code == 0 and "onnxruntime" in out and "targets" in out and "faster than real time" in out


def test_export_refuses_bad_input_in_one_line(tmp_path, capsys):
    code, _, err = run_cli(["export", tmp_path, "--out", tmp_path / "m.onnx"], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"serkd: error: {tmp_path}")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    for verb in (["predict", tmp_path / "junk.onnx", tmp_path], ["bench", tmp_path / "junk.onnx", "--quick"]):
        code, _, err = run_cli(verb, capsys)
        assert code == 2 and err.startswith("serkd: error: ") and err.count("\n") == 1


def test_loading_a_checkpoint_never_unpickles(trained, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    module, meta = load_deployable(trained / "spk00")
    assert meta["model"] == "lightsernet" and not module.training


def test_predict_refuses_speaker_clips_for_a_graph_without_speaker_normalisation(exported, tiny_synth, capsys):
    model = exported["graphs"]["fp32"]["path"]
    clip = sorted((tiny_synth / "wav" / "spk00").glob("*.wav"))[0]
    code, _, err = run_cli(["predict", model, clip, "--speaker", clip], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "speaker: " in err and "is not speaker-normalised (normalize: utterance)" in err
    assert json.loads(OnnxClassifier(model).metadata["normalization"])["normalize"] == "utterance"
