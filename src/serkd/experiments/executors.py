"""Where units run: in this process, in N local worker processes, or as Ray tasks on a cluster.

Both executors take a list of :class:`~serkd.experiments.units.Unit` and yield an
:class:`~serkd.experiments.units.Outcome` per unit as each finishes (any order); the driver stores each one
when it arrives, so a unit that finished is never lost.

GPUs: ``gpus_per_unit`` means the same to both. Ray reserves that fraction of a GPU per task (0.25: four
units share one). The local executor gives each of its ``jobs`` worker processes one device for its
lifetime (:func:`placement`): the visible GPUs round-robin (``cuda:0``, ``cuda:1``, ``cuda:0``...), at most
``1 / gpus_per_unit`` workers per GPU (more jobs than that are not started); a unit whose config names no
device (``auto``) runs on its worker's. ``gpus_per_unit`` unset: the workers share the visible GPUs
round-robin without a cap; ``0``: units run on the CPU.

Ctrl-C: local workers ignore SIGINT (a terminal sends it to the whole process group); the driver stops
them at once (SIGTERM), stores the outcomes that had already arrived, and raises KeyboardInterrupt.
"""

from __future__ import annotations

import math
import os
import queue
import signal
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from serkd.config import ConfigError
from serkd.errors import SerkdError
from serkd.experiments.units import Outcome, Unit, one_line, run_unit, warm_up

UnitFn = Callable[[Unit], Outcome]
POLL_SECONDS = 0.5  # how often the driver checks that its workers are alive while it waits
STOP_SECONDS = 5.0  # a worker asked to stop gets this long before it is killed


def visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # no CUDA build, no driver: no GPU
        return 0


def placement(jobs: int, gpus_per_unit: float | None = None, device_count: int | None = None) -> list[str | None]:
    """The device of each local worker (``None``: as each unit's config says). ``device_count``: the visible
    GPUs (default: torch's count; tests give a number to check the placement without a GPU)."""
    if jobs < 1:
        raise ConfigError("jobs", "must be at least 1")
    if gpus_per_unit is not None and gpus_per_unit < 0:
        raise ConfigError("gpus_per_unit", "must be 0 (CPU) or a positive fraction of a GPU")
    if gpus_per_unit == 0:
        return ["cpu"] * jobs
    if gpus_per_unit is not None and gpus_per_unit > 1:
        raise ConfigError("gpus_per_unit", f"{gpus_per_unit:g}: a unit trains on one GPU; at most 1 (0.25: four "
                                           "units share a GPU)")
    count = visible_gpus() if device_count is None else device_count
    if count == 0:
        if gpus_per_unit:
            raise ConfigError("gpus_per_unit", f"{gpus_per_unit:g} but no CUDA device is visible here; 0 runs the "
                                               "units on the CPU")
        return [None] * jobs
    if gpus_per_unit is None:
        return [f"cuda:{i % count}" for i in range(jobs)]
    per_gpu = math.floor(1 / gpus_per_unit + 1e-9)
    return [f"cuda:{i % count}" for i in range(min(jobs, per_gpu * count))]


def placement_note(jobs: int, devices: list[str | None], gpus_per_unit: float | None) -> str | None:
    """One line when placement changes what was asked for (fewer workers than jobs)."""
    if len(devices) >= jobs:
        return None
    gpus = len({d for d in devices if d})
    return (f"jobs {jobs}: {len(devices)} worker(s), at most {math.floor(1 / gpus_per_unit + 1e-9)} unit(s) per GPU "
            f"at gpus_per_unit {gpus_per_unit:g} on {gpus} GPU(s)")


def _worker(fn: UnitFn, device: str | None, tasks, results, index: int) -> None:
    """A worker process: runs the units it is sent on its device until it is sent ``None``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle: it stops us
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # no nested thread pools in a pool of processes
    if fn is run_unit:
        warm_up()  # torch and the training code load once per worker, not inside its first unit's time
    while True:
        unit = tasks.get()
        if unit is None:
            return
        unit = unit.placed(device)
        try:
            outcome = fn(unit)
        except Exception as exc:  # run_unit never raises; a test's function might
            outcome = Outcome.failed(unit, one_line(exc))
        results.put((index, outcome))


@dataclass
class _Worker:
    process: Any
    tasks: Any


class LocalExecutor:
    """``jobs`` worker processes on this machine, each on its own device (:func:`placement`); ``jobs == 1``
    runs units in this process (no pool). The workers start with the first :meth:`map` that needs them and
    serve every later one (the teacher phase, the students, each search trial) until :meth:`close`, so a
    process starts, imports torch and prepares its data once per grid, not once per phase."""

    def __init__(self, jobs: int = 1, gpus_per_unit: float | None = None, device_count: int | None = None):
        self.devices = placement(jobs, gpus_per_unit, device_count)
        self.jobs = len(self.devices)
        self.notes = [n for n in [placement_note(jobs, self.devices, gpus_per_unit)] if n]
        self._workers: list[_Worker] = []
        self._results = None
        self._fn: UnitFn | None = None

    def map(self, units: list[Unit], fn: UnitFn = run_unit) -> Iterator[Outcome]:
        """Outcomes as units finish (any order)."""
        if self.jobs == 1 or (len(units) <= 1 and not self._workers):
            for unit in units:
                yield fn(unit.placed(self.devices[0]))
            return
        yield from self._pool(units, fn)

    def _start(self, index: int) -> _Worker:
        tasks = self._context.SimpleQueue()
        process = self._context.Process(target=_worker, args=(self._fn, self.devices[index], tasks, self._results,
                                                              index), name=f"serkd-unit-worker-{index}", daemon=True)
        process.start()
        return _Worker(process, tasks)

    def _pool(self, units: list[Unit], fn: UnitFn) -> Iterator[Outcome]:
        import multiprocessing as mp

        if self._workers and fn is not self._fn:
            self.close()  # workers run one function for their life
        if not self._workers:
            self._context = mp.get_context("spawn")  # torch and its thread pools do not survive fork reliably
            self._results = self._context.Queue()
            self._fn = fn
        while len(self._workers) < min(self.jobs, len(units)):
            self._workers.append(self._start(len(self._workers)))
        pending, busy = deque(units), {}
        try:
            while pending or busy:
                for index, worker in enumerate(self._workers):
                    if index not in busy and pending:
                        busy[index] = pending.popleft()
                        worker.tasks.put(busy[index])
                try:
                    index, outcome = self._results.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    for index, unit in list(busy.items()):
                        process = self._workers[index].process
                        if not process.is_alive():  # killed (out of memory), crashed: its unit failed
                            busy.pop(index)
                            yield Outcome.failed(unit, f"worker process died (exit code {process.exitcode})")
                            self._workers[index] = self._start(index)
                    continue
                busy.pop(index, None)
                yield outcome
        except KeyboardInterrupt:
            self._stop(at_once=True)
            while True:  # outcomes that arrived before the workers stopped are still the driver's to store
                try:
                    index, outcome = self._results.get(timeout=0.05)
                except (queue.Empty, OSError, EOFError, ValueError):
                    break
                if busy.pop(index, None) is not None:
                    yield outcome
            self._discard()
            raise
        finally:
            if busy and self._workers:  # left early (the caller stopped reading): their outcomes would go astray
                self._stop(at_once=True)
                self._discard()

    def _stop(self, at_once: bool) -> None:
        """Ask every worker to stop (``at_once``: terminate it now), then kill any that does not."""
        for worker in self._workers:
            if not worker.process.is_alive():
                continue
            if at_once:
                worker.process.terminate()
            else:
                try:
                    worker.tasks.put(None)
                except (OSError, ValueError):
                    worker.process.terminate()
        for worker in self._workers:
            worker.process.join(1.0 if at_once else STOP_SECONDS)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(1.0)

    def _discard(self) -> None:
        self._workers = []
        if self._results is not None:
            self._results.cancel_join_thread()
            self._results.close()
            self._results = None

    def close(self) -> None:
        """Stop the workers (each finishes nothing more: it is idle between maps)."""
        if self._workers:
            self._stop(at_once=False)
        self._discard()


class RayExecutor:
    """Each unit is a Ray task with ``cpus_per_unit`` / ``gpus_per_unit`` resources (0.25 GPU: four small students
    share one GPU; Ray sets each task's visible GPU). ``address``: a running cluster (``auto`` or
    ``ray://host:10001``); None starts a local Ray with ``num_cpus`` CPUs. Corpus and feature cache must be on
    storage every node sees; results come back to this driver, which alone writes the results database."""

    def __init__(self, address: str | None = None, cpus_per_unit: float = 1.0, gpus_per_unit: float | None = None,
                 num_cpus: int | None = None):
        import ray

        self.ray = ray
        self.notes: list[str] = []
        self.started_here = not ray.is_initialized()
        if self.started_here:
            env = {"env_vars": {k: v for k, v in os.environ.items() if k in ("SERKD_CACHE", "HF_HUB_OFFLINE",
                                                                              "PYTHONPATH", "OMP_NUM_THREADS")}}
            options = {"address": address} if address else {"num_cpus": num_cpus or os.cpu_count()}
            ray.init(**options, runtime_env=env, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        self.options = {"num_cpus": cpus_per_unit, "num_gpus": gpus_per_unit or 0, "max_retries": 0}
        self.remote = ray.remote(**self.options)(run_unit)

    def map(self, units: list[Unit], fn: UnitFn = run_unit) -> Iterator[Outcome]:
        remote = self.remote if fn is run_unit else self.ray.remote(**self.options)(fn)
        pending = {remote.remote(unit): unit for unit in units}
        try:
            while pending:
                done, _ = self.ray.wait(list(pending), num_returns=1)
                for ref in done:
                    unit = pending.pop(ref)
                    try:
                        yield self.ray.get(ref)
                    except Exception as exc:  # a worker that died (out of memory, node lost)
                        yield Outcome.failed(unit, f"ray task failed: {one_line(exc)}")
        except KeyboardInterrupt:
            for ref in pending:
                self.ray.cancel(ref, force=True)
            raise

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()


def make_executor(kind: str, jobs: int = 1, address: str | None = None, cpus_per_unit: float | None = None,
                  gpus_per_unit: float | None = None):
    """``local`` (``jobs`` worker processes) or ``ray`` (``jobs`` CPUs for a local Ray, else the cluster's)."""
    if kind == "local":
        return LocalExecutor(jobs, gpus_per_unit)
    if kind == "ray":
        return RayExecutor(address, cpus_per_unit or 1.0, gpus_per_unit, num_cpus=jobs if not address else None)
    raise SerkdError(f"unknown executor {kind!r} (local or ray)")
