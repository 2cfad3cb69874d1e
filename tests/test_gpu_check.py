"""benchmarks/gpu_check.py: the smoke run writes every field without the audio packages; its arithmetic."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
AUDIO_PACKAGES = ("librosa", "soundfile", "soxr", "opensmile")


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = load_script()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    """The --cpu-smoke run on a Python where the audio packages cannot be imported (as on the GPU machine)."""
    work = tmp_path_factory.mktemp("gpu_check")
    blocker = work / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in AUDIO_PACKAGES))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(ROOT / "src")]), "OMP_NUM_THREADS": "1"}
    out = work / "gpu_check.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--budget", "600", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"json": json.loads(out.read_text()), "stdout": done.stdout}


def test_smoke_writes_every_field(smoke):
    result = smoke["json"]
    assert result["mode"] == "cpu-smoke" and result["failures"] == []
    assert result["forbidden_modules_imported"] == [] and result["audio_packages_blocked"] == list(AUDIO_PACKAGES)
    for key, value in result.items():
        assert value is not None, key
    env = result["environment"]
    for key in ("python", "torch", "transformers", "timm", "sklearn", "cpu_count", "device_name", "cuda_available"):
        assert env[key] is not None, key
    teacher = result["teacher"]
    assert teacher["frozen_feature_encoder"] and teacher["batch"] == 2 and teacher["parameters"] > 0
    assert sorted(teacher["train"]) == sorted(teacher["inference"]) == ["0.25s", "0.5s"]
    for part in ("train", "inference"):
        for measured in teacher[part].values():
            assert measured["utterances_per_s"] > 0 and "peak_memory_gb" in measured
    assert all(t["steps_per_s"] > 0 and t["steps"] >= 2 for t in teacher["train"].values())


def test_smoke_students_cover_the_grids_and_share_the_device(smoke):
    runs = smoke["json"]["students"]["runs"]
    single = [r for r in runs if r["units"] == 1]
    shared = [r for r in runs if r["units"] == 2]
    # every student x features x corpus of the paper grids alone, the swept students two at a time
    assert {(r["student"], r["features"], r["corpus"]) for r in single} == {
        (s, f, c) for s in gpu_check.GRID_STUDENTS for f in ("mel", "mfcc") for c in ("emodb", "iemocap")}
    assert {(r["student"], r["features"], r["corpus"]) for r in shared} == {
        (s, "mel", "emodb") for s in gpu_check.SWEPT}
    for run in runs:
        assert run["units_ok"] == run["units"] and run["errors"] == []
        assert len(run["per_unit_epochs_per_s"]) == run["units"]
        assert run["aggregate_epochs_per_s"] == pytest.approx(sum(run["per_unit_epochs_per_s"]))
        assert run["epochs"] >= 1 and run["n_train"] > run["n_valid"] > 0 and run["features_on_device"] is False
    assert "students x2" in smoke["stdout"] and "paper grid" in smoke["stdout"]


def test_smoke_estimates_read_the_grid_files(smoke):
    result = smoke["json"]
    emodb, iemocap = result["grids"]["paper-emodb"], result["grids"]["paper-iemocap"]
    assert emodb["source"] == "examples/paper-emodb.yaml"
    assert (emodb["student_units"], emodb["folds"], emodb["epochs"], emodb["teacher_epochs"]) == (400, 10, 100, 20)
    assert (iemocap["student_units"], iemocap["folds"], iemocap["length"]) == (200, 5, 200000)
    assert emodb["units_per_gpu"] == 4
    for name, estimate in result["estimates"].items():
        assert sorted(estimate["by_units"]) == ["1", "2"]
        assert estimate["by_units"]["1"]["derived"] == []  # every job measured alone
        assert all(e["total_hours"] > estimate["teacher_hours"] > 0 for e in estimate["by_units"].values())
        assert estimate["best_units"] in (1, 2)
        assert estimate["sentence"].startswith("the ") and "paper grid" in estimate["sentence"]
        assert estimate["sentence"] in result["summary"], name


def test_fallback_shapes_and_grids_match_the_sources():
    """The script's copies (it runs where serkd.data.features cannot be imported) agree with the originals."""
    from serkd.data.features import FeatureConfig

    for kind in ("mel", "mfcc"):
        for samples in (80000, 200000):
            assert gpu_check.feature_shape(kind, samples, smoke=False) == FeatureConfig(kind, samples).shape()
    for name in gpu_check.GRIDS:
        from_file = gpu_check.grid_facts(gpu_check.read_grid(name)[0])
        assert from_file == gpu_check.grid_facts(gpu_check.FALLBACK_GRIDS[name])


def _run(student, kind, corpus, units, aggregate, n_train):
    return {"student": student, "features": kind, "corpus": corpus, "units": units,
            "aggregate_epochs_per_s": aggregate, "n_train": n_train}


def test_estimate_arithmetic():
    grid = {"corpus": {"kind": "emodb"}, "features": ["mel"], "students": ["a", "b"], "methods": {"ce": {}, "kd": {}},
            "folds": "all", "seeds": [0], "teacher": {"epochs": 2, "batch_size": 8, "length": 80000},
            "train": {"epochs": 10, "length": 80000}, "ray": {"gpus_per_unit": 0.5}}
    facts = gpu_check.grid_facts(grid)
    assert facts["student_units"] == 2 * 2 * 10 and facts["units_per_gpu"] == 2
    runs = [_run("a", "mel", "emodb", 1, 2.0, 214), _run("b", "mel", "emodb", 1, 1.0, 428),
            _run("a", "mel", "emodb", 2, 3.0, 214)]
    teacher = {"train": {"5s": {"steps_per_s": 4.0}}, "inference": {"5s": {"utterances_per_s": 100.0}}}
    result = gpu_check.estimate("g", facts, runs, teacher, [1, 2], "5s", smoke=False)
    # teacher per fold: 2 epochs x (54 steps / 4 + 54 valid / 100) + 535 / 100 s; 10 folds
    assert result["teacher_hours"] == pytest.approx(10 * (2 * (54 / 4 + 54 / 100) + 535 / 100) / 3600)
    # students, 1 unit: 20 units x 10 epochs of each student; a's stand-in had half the training utterances
    one = 20 * 10 * (2 / 2.0 + 1 / 1.0)
    assert result["by_units"]["1"]["student_hours"] == pytest.approx(one / 3600)
    # 2 units: a measured (3.0), b derived from 1 unit x a's speed-up (1.5)
    two = 20 * 10 * (2 / 3.0 + 1 / 1.5)
    assert result["by_units"]["2"]["student_hours"] == pytest.approx(two / 3600)
    assert result["by_units"]["2"]["derived"] == ["b/mel (1 unit x the swept students' 2-unit speed-up)"]
    assert result["best_units"] == 2
    assert "with 2 units at a time" in result["sentence"] and "1 at a time" in result["sentence"]
    lost = gpu_check.estimate("g", facts, runs[:1], None, [1], "5s", smoke=False)
    assert lost["by_units"]["1"]["missing"] == ["b/mel"] and "no estimate" in lost["sentence"]
