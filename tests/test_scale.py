"""The memory-mapped feature store: same numbers as the in-RAM matrix, reuse, bad files, parallel builders,
float16 storage leaving a short training run's scores unchanged."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest
import torch

from serkd.config import RunConfig
from serkd.data.corpora import load_corpus
from serkd.data.features import FeatureConfig, feature_matrix
from serkd.data.store import MappedFeatures, feature_store, store_path

CONFIG = FeatureConfig("mel", 8000)


def test_store_matches_the_in_ram_matrix_and_is_reused(tiny_synth):
    manifest = load_corpus("synth", tiny_synth)
    matrix, _, _ = feature_matrix(manifest, CONFIG)
    features, kept, info = feature_store(manifest, CONFIG)
    assert info.built and info.reused == len(manifest) and len(kept) == len(manifest)
    assert isinstance(features.array, np.memmap) or isinstance(features.array.base, np.memmap)
    assert features.shape == (len(manifest), 1, *matrix.shape[1:])
    idx = torch.tensor([7, 0, 3, 3, 11])
    got = features[idx]
    assert got.dtype == torch.float32 and got.shape == (5, 1, *matrix.shape[1:])
    assert torch.equal(got, torch.from_numpy(matrix[idx.numpy()]).unsqueeze(1))  # order as asked, bit for bit
    again, _, info2 = feature_store(load_corpus("synth", tiny_synth), CONFIG)
    assert not info2.built and "reused" in info2.line()
    assert torch.equal(again[idx], got)


def test_float16_store_is_half_the_size_and_close(tiny_synth):
    manifest = load_corpus("synth", tiny_synth)
    f32, _, _ = feature_store(manifest, CONFIG)
    f16, _, _ = feature_store(manifest, CONFIG, dtype="float16")
    p32, p16 = store_path(manifest, CONFIG, "float32"), store_path(manifest, CONFIG, "float16")
    assert p16.stat().st_size < 0.55 * p32.stat().st_size
    idx = np.arange(len(manifest))
    assert torch.allclose(f16[idx], f32[idx], atol=0.07)  # float16 step is 1/16 at 64..128 dB below the max


def test_skip_bad_drops_rows_and_a_strict_reader_still_fails(tiny_synth, tmp_path):
    import shutil

    import soundfile as sf

    from serkd.data.manifest import CorpusProblems

    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_synth, corpus)
    victim = sorted(corpus.rglob("*.wav"))[2]
    sf.write(victim, np.zeros(8000, dtype=np.float32), 16000)  # decodes, but silent: bad at feature time
    manifest = load_corpus("synth", corpus)
    features, kept, _ = feature_store(manifest, CONFIG, skip_bad=True)
    assert len(kept) == len(features) == len(manifest) - 1 and "skipped 1 bad audio file(s)" in kept.notes[-1]
    assert all(u.path != victim for u in kept.utterances)
    _, kept_again, info = feature_store(load_corpus("synth", corpus), CONFIG, skip_bad=True)
    assert not info.built and len(kept_again) == len(kept)
    with pytest.raises(CorpusProblems, match="all zeros"):
        feature_store(load_corpus("synth", corpus), CONFIG)  # a store built with files dropped is not trusted


def _build(root, cache, queue):
    import os

    os.environ["SERKD_CACHE"] = cache
    torch.set_num_threads(1)
    manifest = load_corpus("synth", root)
    features, _, info = feature_store(manifest, CONFIG)
    queue.put((info.built, float(features[np.arange(len(features))].sum())))


def test_two_processes_build_one_store(tiny_synth, tmp_path):
    cache = str(tmp_path / "cache")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_build, args=(str(tiny_synth), cache, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sorted(built for built, _ in results) == [False, True]  # one built it, the other waited and reused
    assert results[0][1] == results[1][1]
    stores = list((tmp_path / "cache" / "stores").glob("*.npy"))
    assert len(stores) == 1 and not list((tmp_path / "cache" / "stores").glob(".*.tmp"))


def test_mapped_features_index_like_a_tensor():
    array = np.arange(4 * 2 * 3, dtype=np.float16).reshape(4, 2, 3)
    features = MappedFeatures(array)
    assert features.shape == (4, 1, 2, 3) and len(features) == 4
    assert torch.equal(features[torch.tensor([3, 1])][:, 0], torch.from_numpy(array[[3, 1]].astype(np.float32)))


def test_float16_storage_leaves_a_short_run_unchanged(tiny_synth, tmp_path, one_torch_thread):
    """Two epochs of Light-SERNet+ on one fold from float32 and float16 stores: the same test WA/UA and best
    epoch; the training losses differ by the rounding of the inputs (measured 0.2 %)."""
    from serkd.train.run import run

    base = dict(corpus="synth", root=str(tiny_synth), length=8000, epochs=2, folds="0", seed=0, threads=1)
    r32 = run(RunConfig(**base, out=str(tmp_path / "f32")))[0]
    r16 = run(RunConfig(**base, out=str(tmp_path / "f16"), feature_dtype="float16"))[0]
    assert r16.ua == pytest.approx(r32.ua, abs=1e-9) and r16.wa == pytest.approx(r32.wa, abs=1e-9)
    assert r16.best_epoch == r32.best_epoch
    losses = [h["train_loss"] for h in r32.history], [h["train_loss"] for h in r16.history]
    assert np.allclose(*losses, rtol=1e-2)


# ---------------------------------------------------------------- the final model
def test_train_final_after_folds_and_export(tiny_synth, tmp_path, capsys, one_torch_thread):
    import json

    from conftest import run_cli

    from serkd.deploy.export import read_metadata
    from serkd.train.final import cv_scores

    out = tmp_path / "run"
    base = ["train", "--corpus", "synth", "--root", tiny_synth, "--length", "8000", "--epochs", "3", "--threads", "1",
            "--out", out]
    code, _, err = run_cli([*base, "--folds", "0,1", "--final"], capsys)
    assert code == 0, err
    final_epochs = [line for line in err.splitlines() if line.startswith("final lightsernet/ce epoch")]
    assert final_epochs and all("no held-out speakers" in line and "UA" not in line for line in final_epochs)
    meta = json.loads((out / "final" / "checkpoint.json").read_text())
    folds = [json.loads((out / f / "results.json").read_text()) for f in ("spk00", "spk01")]
    best = sorted(f["best_epoch"] for f in folds)
    assert meta["epochs"] == int(np.median(best) + 0.5) and len(meta["train_loss"]) == meta["epochs"]
    assert meta["fold"]["test"] == [] and meta["fold"]["train"] == ["spk00", "spk01", "spk02", "spk03"]
    assert meta["n_train"] == 48 and meta["cv"]["n_folds"] == 2
    assert meta["cv"]["ua_mean"] == pytest.approx(np.mean([f["ua"] for f in folds]))
    assert [f["ua"] for f in meta["cv"]["folds"]] == [f["ua"] for f in folds] and "median" in meta["cv"]["epochs_why"]
    assert not (out / "final" / "results.json").exists()  # no test speakers: report shows the folds only
    code, report, _ = run_cli(["report", out, "--json"], capsys)
    assert code == 0 and {r["fold"] for r in json.loads(report)["rows"]} == {"spk00", "spk01"}
    # the same call again reuses the folds and the final model
    code, _, err = run_cli([*base, "--folds", "0,1", "--final"], capsys)
    assert code == 0 and "final: cached" in err
    assert cv_scores(out)["epochs"] == meta["epochs"]
    # ships: the graph records the scores it stands on; scoring it on 'its test speakers' is refused
    code, _, err = run_cli(["export", out / "final", "--out", tmp_path / "m.onnx"], capsys)
    assert code == 0, err
    props = read_metadata(tmp_path / "m.onnx")
    assert props["source_fold"] == "final" and json.loads(props["cv_scores"])["ua_mean"] == meta["cv"]["ua_mean"]
    code, _, err = run_cli(["export", out / "final", "--out", tmp_path / "m2.onnx", "--corpus", "synth", "--root",
                            tiny_synth], capsys)
    assert code == 2 and "no test speakers" in err and err.count("\n") == 1


def test_final_without_folds_is_one_line(tiny_synth, tmp_path):
    from serkd.config import ConfigError
    from serkd.train.final import train_final

    config = RunConfig(corpus="synth", root=str(tiny_synth), length=8000, epochs=1, out=str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match=r"final: .*no finished folds"):
        train_final(config)


# ---------------------------------------------------------------- cross-corpus
@pytest.fixture(scope="module")
def run_with_final(tiny_synth, tmp_path_factory):
    from serkd.train.run import run

    out = tmp_path_factory.mktemp("xrun")
    torch.set_num_threads(1)
    run(RunConfig(corpus="synth", root=str(tiny_synth), length=8000, epochs=2, folds="0,1", final=True, threads=1,
                  out=str(out)))
    return out


def _other_corpus(tiny_synth, tmp_path):
    """A CSV corpus over the synth audio with other names: angry (= anger), neutral (shared as is), and 'calm'
    (the synth's sadness renamed: a class the run does not have under that name); happiness left out."""
    import csv

    rename = {"anger": "angry", "neutral": "neutral", "sadness": "calm"}
    manifest = load_corpus("synth", tiny_synth)
    table = tmp_path / "other.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "speaker"])
        for u in manifest.utterances:
            if u.label in rename:
                writer.writerow([u.path, rename[u.label], "x" + u.speaker])
    return table, manifest


def test_eval_cross_corpus_over_shared_classes(run_with_final, tiny_synth, tmp_path, capsys):
    import json

    from conftest import run_cli

    from serkd.data.features import feature_matrix
    from serkd.train.checkpoint import load_checkpoint

    table, manifest = _other_corpus(tiny_synth, tmp_path)
    code, out, err = run_cli(["eval", run_with_final, "--corpus", "csv", "--root", table, "--label-map",
                              "angry=anger", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert set(report) >= {"rows", "summary"} and report["shared_classes"] == ["anger", "neutral"]
    assert report["unused_eval_classes"] == ["calm"]
    assert [r["fold"] for r in report["rows"]] == ["spk00", "spk01", "final"]
    n = sum(u.label in ("anger", "neutral") for u in manifest.utterances)
    for row in report["rows"]:
        assert "cross-corpus" in row["marks"] and row["protocol"] == "cross-corpus" and row["corpus"] == "csv"
        assert row["n_test"] == n and row["train_corpus"] == "synth" and 0 <= row["ua"] <= 1
    assert [s["model"] for s in report["summary"]] == ["fold", "final"]
    assert report["summary"][0]["n_folds"] == 2
    assert report["summary"][0]["ua_mean"] == pytest.approx(np.mean([r["ua"] for r in report["rows"][:2]]))
    # the numbers: spk00's model on the shared utterances, argmax over anger/neutral only
    model, meta = load_checkpoint(run_with_final / "spk00")
    labels = meta["labels"]
    shared = [u for u in manifest.utterances if u.label in ("anger", "neutral")]
    features, _, _ = feature_matrix(manifest.subset([manifest.utterances.index(u) for u in shared]),
                                    FeatureConfig("mel", 8000))
    with torch.no_grad():
        logits = model(torch.from_numpy(features).unsqueeze(1)).numpy()
    ids = np.array([labels.index("anger"), labels.index("neutral")])
    predictions = ids[logits[:, ids].argmax(axis=1)]
    targets = np.array([labels.index(u.label) for u in shared])
    assert report["rows"][0]["wa"] == pytest.approx(float((predictions == targets).mean()))
    code, out, _ = run_cli(["eval", run_with_final, "--corpus", "csv", "--root", table], capsys)
    assert code == 0 and "cross-corpus" in out and "final" in out


def test_eval_without_shared_classes_is_one_line(run_with_final, tiny_synth, tmp_path, capsys):
    from conftest import run_cli

    table, _ = _other_corpus(tiny_synth, tmp_path)
    code, _, err = run_cli(["eval", run_with_final, "--corpus", "csv", "--root", table, "--corpus-option",
                            "labels=[calm]", "--skip-bad"], capsys)
    assert code == 2 and "no class of the csv corpus" in err and err.count("\n") == 1
    code, _, err = run_cli(["eval", run_with_final, "--corpus", "csv", "--root", table, "--label-map", "furious=anger"],
                           capsys)
    assert code == 2 and "furious not a class" in err
