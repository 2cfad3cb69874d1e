"""serkd grid / search: units, results store, resume after SIGKILL, local and Ray executors, failures, lock."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import run_cli

from serkd.experiments.store import integrity, read_results

TINY = {
    "name": "tiny", "features": ["mel"], "students": ["lightsernet"],
    "methods": {"ce": {}, "kd": {"temp": 2.0}}, "teacher": {"model": "lightsernet", "epochs": 1},
    "folds": [0, 1], "seeds": [0], "train": {"epochs": 2, "length": 8000},
}


def write_grid(tmp_path: Path, corpus: Path, out: Path, **changes) -> Path:
    spec = {**TINY, "corpus": {"kind": "synth", "root": str(corpus)}, "out": str(out), **changes}
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def table(out: Path) -> list[tuple]:
    """What a finished grid says: every unit's scores and training curve, in a fixed order."""
    rows = read_results(out / "results.db")
    return sorted((r["run"], r["fold"], r["wa"], r["ua"], tuple(h["train_loss"] for h in r["history"]))
                  for r in rows)


@pytest.fixture(scope="module")
def finished(tiny_synth, tmp_path_factory):
    from serkd.cli import main

    tmp = tmp_path_factory.mktemp("grid")
    path = write_grid(tmp, tiny_synth, tmp / "local1")
    assert main(["grid", str(path)]) == 0
    return tmp / "local1"


def test_grid_runs_every_unit_once_and_resumes(finished, tiny_synth, tmp_path, capsys):
    rows = table(finished)
    assert [r[:2] for r in rows] == [("lightsernet-mel-ce-seed0", "spk00"), ("lightsernet-mel-ce-seed0", "spk01"),
                                     ("lightsernet-mel-kd-ba67cf-seed0", "spk00"),
                                     ("lightsernet-mel-kd-ba67cf-seed0", "spk01"),
                                     ("teacher", "spk00"), ("teacher", "spk01")]
    assert integrity(finished / "results.db") == "ok"
    assert _done(finished / "results.db") == 6
    # closed cleanly: no -wal/-shm beside it, even after the report read it (read-only) at the end
    assert sorted(p.name for p in finished.glob("results.db*")) == ["results.db"]
    from serkd.experiments.report import collect

    def configurations(paths):
        return sorted((s["label"], s["n"], s["ua_mean"], s["variant"], tuple(s["marks"]))
                      for s in collect(paths)["summary"] if s["role"] == "student")

    # the unit folders (no run.json: each fold's checkpoint says its config) read as the store does
    assert configurations(sorted((finished / "runs").iterdir())) == configurations([finished / "results.db"])
    path = finished.parent / "local1.yaml"
    code, out, _ = run_cli(["grid", path, "--json"], capsys)
    assert code == 0 and json.loads(out) == {"total": 6, "ran": 0, "reused": 6, "failed": []}
    code, out, _ = run_cli(["grid", path, "--dry-run", "--json"], capsys)
    assert code == 0 and {u["status"] for u in json.loads(out)["units"]} == {"done"}


def test_two_local_workers_give_the_same_table(finished, tiny_synth, tmp_path, capsys):
    path = write_grid(tmp_path, tiny_synth, tmp_path / "local2")
    code, _, err = run_cli(["grid", path, "--jobs", "2"], capsys)
    assert code == 0, err
    assert table(tmp_path / "local2") == table(finished)


def test_ray_executor_gives_the_same_table(finished, tiny_synth, tmp_path, capsys):
    pytest.importorskip("ray")
    path = write_grid(tmp_path, tiny_synth, tmp_path / "ray")
    code, _, err = run_cli(["grid", path, "--executor", "ray", "--jobs", "2"], capsys)
    assert code == 0, err
    assert table(tmp_path / "ray") == table(finished)


def test_sigkill_at_random_points_then_resume_gives_the_same_table(finished, tiny_synth, tmp_path):
    path = write_grid(tmp_path, tiny_synth, tmp_path / "killed")
    db = tmp_path / "killed" / "results.db"
    # the same OpenMP pool size as the reference run: CPU kernels are chosen by it when torch starts
    env = dict(os.environ)
    rng = random.Random(7)
    for target in sorted(rng.sample(range(1, 6), 2)):  # kill once that many units are stored, twice
        proc = subprocess.Popen([sys.executable, "-m", "serkd", "grid", str(path)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if db.is_file() and _done(db) >= target:
                time.sleep(rng.uniform(0.0, 1.0))  # somewhere inside the next unit
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert integrity(db) == "ok"
    proc = subprocess.run([sys.executable, "-m", "serkd", "grid", str(path)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert integrity(db) == "ok" and table(tmp_path / "killed") == table(finished)


def _done(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return conn.execute("SELECT count(*) FROM units WHERE status = 'done'").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def test_a_failing_unit_is_recorded_and_the_others_go_on(finished, tiny_synth, tmp_path, capsys):
    from serkd.data import teacher_outputs

    store = tmp_path / "partial-teacher"  # holds fold spk00 only: kd on spk01 must fail, the rest run
    outputs = teacher_outputs.read_fold(finished / "teacher", "spk00")
    teacher_outputs.write_fold(store, "spk00", outputs.utt_ids, outputs.logits, outputs.meta,
                               embeddings=outputs.embeddings)
    path = write_grid(tmp_path, tiny_synth, tmp_path / "fails", teacher={"store": str(store)})
    code, _, err = run_cli(["grid", path], capsys)
    err = " ".join(err.split())  # rich wraps long lines
    assert code == 1 and "failed: lightsernet-mel-kd-ba67cf-seed0 spk01: " in err
    assert "missing teacher outputs for fold 'spk01'" in err
    conn = sqlite3.connect(tmp_path / "fails" / "results.db")
    status = dict(conn.execute("SELECT name || '/' || fold, status FROM units").fetchall())
    conn.close()
    kd = "lightsernet-mel-kd-ba67cf-seed0"
    assert status == {"lightsernet-mel-ce-seed0/spk00": "done", "lightsernet-mel-ce-seed0/spk01": "done",
                      f"{kd}/spk00": "done", f"{kd}/spk01": "failed"}


def test_second_grid_on_the_same_out_is_refused(tiny_synth, tmp_path, capsys):
    from serkd.io import try_lock

    path = write_grid(tmp_path, tiny_synth, tmp_path / "busy")
    handle = try_lock(tmp_path / "busy" / ".grid.lock")
    try:
        code, _, err = run_cli(["grid", path], capsys)
    finally:
        handle.close()
    assert code == 2 and err.count("\n") == 1 and "another serkd grid is running" in err


def test_bad_grid_keys_are_one_line_naming_the_file_and_key(tiny_synth, tmp_path, capsys):
    path = write_grid(tmp_path, tiny_synth, tmp_path / "bad", methods={"kd": {"tmep": 2}})
    code, _, err = run_cli(["grid", path], capsys)
    assert code == 2 and err.startswith(f"serkd: error: {path}: methods.kd: ") and "tmep" in err
    path = write_grid(tmp_path, tiny_synth, tmp_path / "bad", train={"epochs": 0})
    code, _, err = run_cli(["grid", path], capsys)
    assert code == 2 and err.strip() == f"serkd: error: {path}: train.epochs: must be at least 1"
    path = write_grid(tmp_path, tiny_synth, tmp_path / "bad", studnets=["x"])
    code, _, err = run_cli(["grid", path], capsys)
    assert code == 2 and "studnets: unknown grid key" in err


def test_search_optimises_validation_ua_resumes_and_tests_once(tiny_synth, tmp_path, capsys):
    search = {"method": "kd", "params": {"temp": [1.0, 4.0, "log"], "alpha": [0.1, 0.9]}, "trials": 2}
    path = write_grid(tmp_path, tiny_synth, tmp_path / "search", methods={"kd": {}}, search=search,
                      train={"epochs": 1, "length": 8000})
    code, out, err = run_cli(["search", path, "--json"], capsys)
    assert code == 0, err
    assert "test UA" not in err and err.count("valid UA") >= 2 * 2 + 2  # 2 trials x 2 folds, the best once more
    result = json.loads(out)
    assert set(result) == {"best_params", "valid_ua", "trials", "test"} and result["trials"] == 2
    assert result["test"]["n_folds"] == 2 and set(result["best_params"]) == {"temp", "alpha"}
    conn = sqlite3.connect(tmp_path / "search" / "results.db")
    trials = conn.execute("SELECT valid_ua, method_params FROM units WHERE kind = 'trial'").fetchall()
    conn.close()
    by_params: dict[str, list[float]] = {}
    for valid_ua, params in trials:
        by_params.setdefault(params, []).append(valid_ua)
    assert max(sum(v) / len(v) for v in by_params.values()) == pytest.approx(result["valid_ua"])  # validation only
    selected = [r for r in read_results(tmp_path / "search" / "results.db") if r["method"] == "kd"]
    assert len(selected) == 2 and all(r["marks"] == ["search-selected"] for r in selected)
    path.write_text(path.read_text().replace("trials: 2", "trials: 3"))
    code, out, _ = run_cli(["search", path, "--json"], capsys)
    assert code == 0 and json.loads(out)["trials"] == 3  # resumed to 3 in total, not 3 more


@pytest.mark.parametrize("name", ["paper-emodb", "paper-iemocap", "tiny", "search-ckd", "axes"])
def test_example_grids_are_valid(name):
    from serkd.experiments.grid import GridSpec

    spec = GridSpec.from_yaml(Path(__file__).resolve().parents[1] / "examples" / f"{name}.yaml")
    if name.startswith("paper"):
        assert len(spec.students) * len(spec.methods) * len(spec.features) == 40 and spec.folds == "all"
        assert spec.teacher["model"] == "microsoft/wavlm-base-plus" and spec.gpus_per_unit == 0.25
    if name == "axes":
        assert spec.axis_points()[-1] == {"recipe": "strong", "lr": 3.0e-4} and spec.students[1].params
