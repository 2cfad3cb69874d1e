"""The grid before and around training: every unit checked up front (dry run too), students with options and
axes over config fields, unit placement on GPUs (a fake device count, the same code path), Ctrl-C that
keeps finished units, and the prepared-data cache that makes a unit cost what its training costs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import run_cli

from serkd.experiments.executors import LocalExecutor, placement
from serkd.experiments.units import Outcome, Unit

BASE = {"name": "plan", "features": ["mel"], "students": ["lightsernet"], "methods": {"ce": {}},
        "folds": [0, 1], "seeds": [0], "train": {"epochs": 1, "length": 8000}}


def grid_file(tmp_path: Path, corpus: Path, **changes) -> Path:
    spec = {**BASE, "corpus": {"kind": "synth", "root": str(corpus)}, "out": str(tmp_path / "out"), **changes}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# ---------------------------------------------------------------- checked before anything runs

def test_every_problem_is_one_line_in_the_dry_run_and_before_any_training(tiny_synth, tmp_path, capsys):
    path = grid_file(tmp_path, tiny_synth, students=["lightsernett", {"name": "lightsernet", "params": {"widht": 2}}],
                     features=["mel", "mell"], methods={"ce": {}, "kd": {"tmep": 2}},
                     axes={"recipe": ["seed", "strnog"]}, teacher={"model": "lightsernet", "epochs": 1})
    expected = [f"serkd: error: {path}: students.lightsernett: unknown model 'lightsernett'",
                f"serkd: error: {path}: students.lightsernet: student 'lightsernet' has no option(s) widht",
                f"serkd: error: {path}: features.mell: unknown feature kind 'mell'",
                f"serkd: error: {path}: methods.kd: KD method 'kd' has no parameter(s) tmep",
                f"serkd: error: {path}: axes.recipe: must be one of seed, strong, not 'strnog' (value 'strnog')"]
    for argv in (["grid", path, "--dry-run"], ["grid", path, "--jobs", "2"]):
        code, out, err = run_cli(argv, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and out == "" and len(lines) == len(expected), err
        assert all(line.startswith(want) for line, want in zip(lines, expected)), err
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written: not even the teacher


def test_a_bad_corpus_fold_or_crop_is_refused_naming_the_grid_key(tiny_synth, tmp_path, capsys):
    code, _, err = run_cli(["grid", grid_file(tmp_path, tiny_synth, folds=[0, 9]), "--dry-run"], capsys)
    assert code == 2 and err.count("\n") == 1 and ": folds: " in err
    code, _, err = run_cli(["grid", grid_file(tmp_path, tiny_synth, train={"epochs": 1, "length": 500}),
                            "--dry-run"], capsys)
    assert code == 2 and err.strip().endswith(": train.length: 500 samples is shorter than one mel window (n_fft 1024)")
    code, _, err = run_cli(["grid", grid_file(tmp_path, tiny_synth, teacher={"model": "resnet1"},
                                              methods={"kd": {}}), "--dry-run"], capsys)
    assert code == 2 and ": teacher.model: unknown model 'resnet1'" in err


def test_empty_methods_are_refused_not_run_as_ce(tiny_synth, tmp_path, capsys):
    code, _, err = run_cli(["grid", grid_file(tmp_path, tiny_synth, methods={}), "--dry-run"], capsys)
    assert code == 2 and "methods: empty: name at least one method" in err


def test_axes_and_student_options_make_distinct_named_units(tiny_synth, tmp_path, capsys):
    students = ["lightsernet", {"name": "lightsernet", "params": {"dropout": 0.1}}]
    path = grid_file(tmp_path, tiny_synth, students=students,
                     methods={"ce": {}, "kd": {"temp": 2.0}}, teacher={"store": str(tmp_path / "teacher")},
                     axes={"recipe": ["seed", "strong"], "lr": [0.001, 0.01]})
    code, out, err = run_cli(["grid", path, "--dry-run", "--json"], capsys)
    assert code == 0, err
    units = json.loads(out)["units"]
    names = sorted({u["name"] for u in units})
    assert len(units) == 2 * 2 * 2 * 2 * 2 and len(names) == 16 and len({u["key"] for u in units}) == 32
    assert "lightsernet-dropout=0.1-mel-kd-ba67cf-lr=0.01,recipe=strong-seed0" in names
    assert "lightsernet-mel-ce-lr=0.001,recipe=seed-seed0" in names
    from serkd.experiments.grid import GridSpec, plan

    spec = GridSpec.from_yaml(path)
    (unit,) = [u for u in plan(spec).student_units
               if u.name == "lightsernet-dropout=0.1-mel-kd-ba67cf-lr=0.01,recipe=strong-seed0" and u.fold == "spk01"]
    assert (unit.config["recipe"], unit.config["lr"], unit.config["student_params"]) == ("strong", 0.01,
                                                                                           {"dropout": 0.1})
    assert unit.config["teacher"] == str(tmp_path / "teacher") and unit.config["threads"] == 1
    assert spec.to_dict()["students"][1] == {"name": "lightsernet", "params": {"dropout": 0.1}}
    for bad, why in (({"method": ["kd"]}, "axes.method: is set by the grid itself"),
                     ({"epochz": [1]}, "axes.epochz: unknown config field"),
                     ({"lr": 0.1}, "axes.lr: expected a non-empty list")):
        code, _, err = run_cli(["grid", grid_file(tmp_path, tiny_synth, axes=bad), "--dry-run"], capsys)
        assert code == 2 and why in err, err
    code, _, err = run_cli(["grid", grid_file(tmp_path, tiny_synth, axes={"lr": [0.1]},
                                              train={"lr": 0.2, "epochs": 1}), "--dry-run"], capsys)
    assert code == 2 and "axes.lr: is also set in train" in err


# ---------------------------------------------------------------- placement on GPUs

def test_placement_spreads_workers_over_gpus_within_their_share():
    assert placement(4, 0.5, device_count=2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert placement(8, 0.5, device_count=2) == ["cuda:0", "cuda:1"] * 2  # at most 2 units per GPU
    assert placement(3, 0.25, device_count=1) == ["cuda:0"] * 3
    assert placement(3, None, device_count=2) == ["cuda:0", "cuda:1", "cuda:0"]  # unset: share, no cap
    assert placement(2, None, device_count=0) == [None, None]  # as each unit's config says (auto: CPU here)
    assert placement(2, 0, device_count=4) == ["cpu", "cpu"]
    from serkd.config import ConfigError

    with pytest.raises(ConfigError, match="no CUDA device is visible"):
        placement(2, 0.5, device_count=0)
    with pytest.raises(ConfigError, match="at most 1"):
        placement(2, 2, device_count=4)


def fake_unit(unit: Unit) -> Outcome:
    """Stands for run_unit in worker processes: says where it ran and when."""
    started = time.time()
    time.sleep(0.3)
    return Outcome(unit.key, "done", result={"device": unit.device, "pid": os.getpid(), "start": started,
                                             "end": time.time()}, device=unit.device)


def test_local_workers_run_units_on_their_gpu_at_most_their_share_at_once():
    executor = LocalExecutor(jobs=8, gpus_per_unit=0.5, device_count=2)  # 2 fake GPUs, 2 units each
    assert executor.jobs == 4 and executor.notes == ["jobs 8: 4 worker(s), at most 2 unit(s) per GPU at "
                                                     "gpus_per_unit 0.5 on 2 GPU(s)"]
    units = [Unit(f"k{i}", "student", "u", "spk00", {"device": "auto"}, "d") for i in range(10)]
    units.append(Unit("pinned", "student", "u", "spk00", {"device": "cpu"}, "d"))  # a config's own device wins
    try:
        outcomes = list(executor.map(units, fake_unit))
    finally:
        executor.close()
    assert sorted(o.key for o in outcomes) == sorted(u.key for u in units)
    by_key = {o.key: o.result for o in outcomes}
    assert by_key.pop("pinned")["device"] == "cpu"
    runs = list(by_key.values())
    assert {r["device"] for r in runs} == {"cuda:0", "cuda:1"} and len({r["pid"] for r in runs}) <= 4
    assert all(len({r["device"] for r in runs if r["pid"] == pid}) == 1 for pid in {r["pid"] for r in runs})
    for device in ("cuda:0", "cuda:1"):  # never more than two at once on one GPU
        mine = [r for r in runs if r["device"] == device]
        assert max(sum(o["start"] <= r["start"] < o["end"] for o in mine) for r in mine) <= 2


def test_gpu_share_from_the_grid_file_or_flag_is_checked_in_its_words(tiny_synth, tmp_path, capsys):
    path = grid_file(tmp_path, tiny_synth, gpus_per_unit=0.25)
    from serkd.experiments.executors import visible_gpus

    if visible_gpus():
        pytest.skip("a GPU is visible: the share is valid here")
    code, _, err = run_cli(["grid", path], capsys)
    assert code == 2 and err.strip() == (f"serkd: error: {path}: gpus_per_unit: 0.25 but no CUDA device is visible "
                                         "here; 0 runs the units on the CPU")
    code, _, err = run_cli(["grid", path, "--gpus-per-unit", "2"], capsys)
    assert code == 2 and err.startswith("serkd: error: --gpus-per-unit: 2: a unit trains on one GPU")


# ---------------------------------------------------------------- Ctrl-C

def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _stored(db: Path) -> int:
    from serkd.experiments.store import read_status

    try:
        return sum(status == "done" for status in read_status(db).values())
    except Exception:  # the driver is creating it
        return 0


def test_ctrl_c_stops_the_workers_at_once_and_keeps_finished_units(tiny_synth, tmp_path):
    path = grid_file(tmp_path, tiny_synth, methods={"ce": {}}, seeds=[0, 1, 2], train={"epochs": 2, "length": 8000})
    db = tmp_path / "out" / "results.db"
    # a terminal sends SIGINT to the whole foreground process group: the driver and its workers
    proc = subprocess.Popen([sys.executable, "-m", "serkd", "grid", str(path), "--jobs", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and _stored(db) < 1:
        time.sleep(0.1)
    assert proc.poll() is None and _stored(db) >= 1, proc.stderr.read() if proc.poll() is not None else "too slow"
    workers = _children(proc.pid)
    assert len(workers) >= 2
    os.killpg(proc.pid, signal.SIGINT)
    sent = time.time()
    _, err = proc.communicate(timeout=60)
    assert time.time() - sent < 15, "took too long to stop"
    assert proc.returncode == 130
    kept = _stored(db)
    assert kept >= 1 and f"interrupted: {kept} unit(s) finished and stored in {db} by this run" in err, err
    assert f"{6 - kept} not run or stopped unfinished" in err
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()
                and "serkd" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")]
    assert sorted(p.name for p in db.parent.glob("results.db*")) == ["results.db"]


# ---------------------------------------------------------------- the per-process data cache

def test_units_share_one_prepared_corpus_and_train_as_train_fold_does(tiny_synth, tmp_path, monkeypatch):
    from serkd.config import RunConfig
    from serkd.experiments import units
    from serkd.train import run as training
    from serkd.train.run import train_fold

    units.clear_prepared()
    plans = []
    original = training.plan
    monkeypatch.setattr(training, "plan", lambda config, emit=None: plans.append(config) or original(config, emit))
    configs = [RunConfig(corpus="synth", root=str(tiny_synth), out=str(tmp_path / name), epochs=1, length=8000,
                         threads=1, folds=fold, **options)
               for name, fold, options in (("a", "spk00", {}), ("b", "spk01", {"lr": 0.01}),
                                           ("c", "spk00", {"recipe": "strong"}))]
    outcomes = [units.run_unit(Unit(f"k{i}", "student", c.out, c.folds, c.to_dict(), "d"))
                for i, c in enumerate(configs)]
    assert all(o.ok for o in outcomes) and len(plans) == 1  # one corpus read for three units
    other = units.run_unit(Unit("k9", "student", "x", "spk00",
                                configs[0].replace(out=str(tmp_path / "d"), length=9000).to_dict(), "d"))
    assert other.ok and len(plans) == 2  # another crop is other data
    monkeypatch.setattr(training, "plan", original)
    alone = train_fold(configs[1].replace(out=str(tmp_path / "alone")), "spk01")
    assert (alone.wa, alone.ua, [h["train_loss"] for h in alone.history]) == (
        outcomes[1].result["wa"], outcomes[1].result["ua"], [h["train_loss"] for h in outcomes[1].result["history"]])
    units.clear_prepared()
