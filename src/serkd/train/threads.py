"""How many torch threads a training process uses, and whether the machine is already too busy for them.

``threads`` left unset means one thread per physical core of this process' share: the CPUs it may run
on (its affinity mask), capped by a cgroup CPU quota (containers, Slurm, Kubernetes), counted as
physical cores (two hyper-threads of one core count once), divided among the processes it starts.
torch's own default counts the machine's cores and ignores quotas: 64 threads in a 4-CPU container,
or one full-width pool per process when several run side by side, spend most of their time waiting
for each other. ``OMP_NUM_THREADS``, when set, is the user's word and caps the default.

Oversubscription: the machine's 1-minute load average counts the runnable processes of everyone (this
one included once busy: one is taken off); when the rest plus this run's threads exceed the CPUs, the
threads queue behind other work (measured on a busy 2-core machine: one fold took 1015 s with torch's
default threads, 67 s with one thread). That is said once, as a ``note`` event the CLI renders.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from serkd.train.events import Emitter

_CPU_SYSFS = Path("/sys/devices/system/cpu")
_CGROUP = Path("/sys/fs/cgroup")


def affinity_cpus() -> list[int]:
    """The logical CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def cgroup_cpu_limit(root: Path = _CGROUP) -> float | None:
    """CPUs granted by a cgroup quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def physical_cores(cpus: list[int] | None = None, sysfs: Path = _CPU_SYSFS) -> int:
    """Physical cores among ``cpus`` (hyper-threads of one core count once); the CPU count when the
    topology is unreadable."""
    cpus = affinity_cpus() if cpus is None else cpus
    cores = set()
    for cpu in cpus:
        topology = sysfs / f"cpu{cpu}" / "topology"
        try:
            cores.add(tuple((topology / name).read_text().strip() for name in ("physical_package_id", "core_id")))
        except OSError:
            return max(len(cpus), 1)
    return max(len(cores), 1)


def share_cores() -> int:
    """Physical cores this process may use: its affinity mask, capped by a cgroup quota."""
    cores = physical_cores()
    limit = cgroup_cpu_limit()
    return max(1, min(cores, math.ceil(limit))) if limit else cores


def default_threads(processes: int = 1) -> int:
    """One thread per physical core of this process' share, split among ``processes`` started together;
    ``OMP_NUM_THREADS``, when set, caps it."""
    threads = max(1, share_cores() // max(processes, 1))
    try:
        cap = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        cap = 0
    return min(threads, cap) if cap > 0 else threads


def oversubscription(threads: int, processes: int = 1, load: float | None = None,
                     cpus: int | None = None) -> str | None:
    """A warning when ``processes`` x ``threads`` do not fit beside the machine's load, else None.

    ``load``: the 1-minute load average (default: the machine's); ``cpus``: the machine's logical CPUs."""
    if load is None:
        if not hasattr(os, "getloadavg"):
            return None
        load = os.getloadavg()[0]
    cpus = cpus or os.cpu_count() or 1
    wanted = threads * processes
    who = f"{processes} processes x {threads} threads" if processes > 1 else f"{threads} thread(s)"
    if wanted > cpus:
        return (f"oversubscribed: {who} on {cpus} CPU(s); expect a slower run (set threads to at most "
                f"{max(cpus // processes, 1)})")
    others = max(load - 1.0, 0.0)  # the average already counts this process once it has been busy
    if others + wanted > cpus + 0.5:
        return (f"oversubscribed: machine load {load:.1f} on {cpus} CPU(s) leaves no room for {who}; the run will "
                "share cores with other work and be slower than usual (its timings are not representative)")
    return None


def use_threads(threads: int | None, emit: Emitter | None = None, processes: int = 1) -> int:
    """Set torch's intra-op threads to ``threads`` (None: :func:`default_threads`), say once if the machine is
    oversubscribed, and return the count. The hook where training starts."""
    import torch

    count = threads or default_threads(processes)
    torch.set_num_threads(count)
    warning = oversubscription(count, processes)
    if warning and emit is not None:
        emit.note(warning)
    return count
