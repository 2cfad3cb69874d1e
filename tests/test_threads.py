"""Thread defaults (one per physical core of the process' share) and the oversubscription warning."""

from __future__ import annotations

from pathlib import Path

import torch

from serkd.train import threads
from serkd.train.events import Emitter, Event


def fake_sysfs(root: Path, cores: list[tuple[int, int]]) -> Path:
    """cpuN/topology/{physical_package_id,core_id} for each (package, core) in CPU order."""
    for cpu, (package, core) in enumerate(cores):
        topology = root / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text(f"{package}\n")
        (topology / "core_id").write_text(f"{core}\n")
    return root


def test_physical_cores_counts_hyperthreads_once(tmp_path):
    # 2 packages x 2 cores x 2 hyper-threads: 8 logical CPUs, 4 physical cores
    sysfs = fake_sysfs(tmp_path, [(p, c) for _ in range(2) for p in range(2) for c in range(2)])
    assert threads.physical_cores(list(range(8)), sysfs) == 4
    assert threads.physical_cores([0, 4], sysfs) == 1  # two hyper-threads of one core
    assert threads.physical_cores([0, 1, 2], sysfs) == 3
    assert threads.physical_cores([0, 1, 9], sysfs) == 3  # unreadable topology: count the CPUs


def test_cgroup_quota_v2_and_v1(tmp_path):
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert threads.cgroup_cpu_limit(tmp_path) == 2.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpu_limit(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert threads.cgroup_cpu_limit(v1) == 3.0
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    assert threads.cgroup_cpu_limit(v1) is None
    assert threads.cgroup_cpu_limit(tmp_path / "absent") is None


def test_default_threads_share_quota_and_omp_cap(monkeypatch):
    monkeypatch.setattr(threads, "physical_cores", lambda: 16)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.default_threads() == 16
    assert threads.default_threads(processes=4) == 4
    assert threads.default_threads(processes=32) == 1  # never zero
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 2.5)  # a 2.5-CPU container on a 16-core host
    assert threads.default_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.default_threads() == 2


def test_oversubscription_messages():
    assert threads.oversubscription(2, load=0.9, cpus=8) is None
    assert threads.oversubscription(4, processes=2, load=1.0, cpus=8) is None
    busy = threads.oversubscription(2, load=8.0, cpus=8)
    assert busy and "machine load 8.0 on 8 CPU(s)" in busy and "2 thread(s)" in busy
    too_many = threads.oversubscription(4, processes=4, load=0.0, cpus=8)
    assert too_many and "4 processes x 4 threads on 8 CPU(s)" in too_many and "at most 2" in too_many


def test_use_threads_sets_torch_and_warns_once(monkeypatch):
    events: list[Event] = []
    before = torch.get_num_threads()
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (50.0, 50.0, 50.0))
    monkeypatch.setattr(threads, "default_threads", lambda processes=1: 1)
    try:
        assert threads.use_threads(None, Emitter(events.append)) == 1
        assert torch.get_num_threads() == 1
        assert [e.kind for e in events] == ["note"] and "oversubscribed" in events[0].message
        monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
        events.clear()
        assert threads.use_threads(1, Emitter(events.append)) == 1
        assert events == []
    finally:
        torch.set_num_threads(before)


def test_train_cli_warns_on_a_busy_machine(tiny_synth, tmp_path, capsys, monkeypatch):
    """``serkd train`` without --threads: the default applies and the CLI prints the warning event."""
    from conftest import run_cli

    before = torch.get_num_threads()
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    try:
        code, _, err = run_cli(["train", "--corpus", "synth", "--root", tiny_synth, "--length", "8000", "--epochs",
                                "1", "--folds", "0", "--out", tmp_path / "run"], capsys)
    finally:
        torch.set_num_threads(before)
    assert code == 0
    assert "oversubscribed: machine load 64.0" in err
