"""Where units run: in this process, in N local worker processes, or as Ray tasks on a cluster.

A unit is a plain dict (picklable): its kind (``teacher``/``student``/``trial``), the resolved config
as a dict, the fold and its key. :func:`run_unit` trains it and returns its outcome; it never raises
(a failure is an outcome with a one-line reason), so one bad unit cannot stop the others.

Threads: every unit sets torch's intra-op threads to the config's ``threads`` (the grid's default
is 1), whichever executor runs it. Oversubscribed processes, not compute, decide throughput on a
shared CPU (measured: one 15-epoch mobilenet fold took 1015 s with torch's default threads beside
other busy processes, 67 s with one thread per process), and a fixed thread count keeps results
bit-identical across executors on CPU.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

Outcome = dict[str, Any]


def run_unit(unit: dict[str, Any]) -> Outcome:
    """Train one unit (a student fold or a teacher fold); ``{"key", "status", "result"|"error", "seconds"}``."""
    started = time.perf_counter()
    try:
        import torch

        from serkd.config import RunConfig, TeacherConfig

        threads = unit["config"].get("threads") or 1
        torch.set_num_threads(threads)
        if unit["kind"] == "teacher":
            from serkd.train.teachers import train_teacher

            (result,) = train_teacher(TeacherConfig.from_dict(unit["config"]))
        else:
            from serkd.train.run import train_fold

            result = train_fold(RunConfig.from_dict(unit["config"]), unit["fold"])
        return {"key": unit["key"], "status": "done", "result": result.to_json(),
                "seconds": round(time.perf_counter() - started, 2)}
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        origin = f" ({type(exc).__name__} at {os.path.basename(where.filename)}:{where.lineno})" if where and \
            not _is_user_error(exc) else ""
        return {"key": unit["key"], "status": "failed", "error": first[:300] + origin,
                "seconds": round(time.perf_counter() - started, 2)}


def _is_user_error(exc: BaseException) -> bool:
    from serkd.errors import SerkdError

    return isinstance(exc, SerkdError)


def _init_worker() -> None:
    # each worker is one process of a pool sharing the cores: no nested thread pools either
    os.environ.setdefault("OMP_NUM_THREADS", "1")


class LocalExecutor:
    """``jobs`` worker processes on this machine (``jobs == 1``: in this process, no pool)."""

    def __init__(self, jobs: int = 1):
        self.jobs = max(1, jobs)

    def map(self, units: list[dict], fn: Callable[[dict], Outcome] = run_unit) -> Iterator[Outcome]:
        """Outcomes as units finish (any order)."""
        if self.jobs == 1 or len(units) <= 1:
            for unit in units:
                yield fn(unit)
            return
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn: torch and its thread pools do not survive fork reliably
        with ProcessPoolExecutor(max_workers=self.jobs, mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker) as pool:
            futures = [pool.submit(fn, unit) for unit in units]
            for future in as_completed(futures):
                yield future.result()

    def close(self) -> None:
        pass


class RayExecutor:
    """Each unit is a Ray task with ``cpus_per_unit`` / ``gpus_per_unit`` resources (0.25 GPU: four
    small students share one GPU). ``address``: a running cluster (``auto`` or ``ray://host:10001``);
    None starts a local Ray with ``num_cpus`` CPUs. Corpus and feature cache must be on storage every
    node sees; results come back to this driver, which alone writes the results database."""

    def __init__(self, address: str | None = None, cpus_per_unit: float = 1.0, gpus_per_unit: float = 0.0,
                 num_cpus: int | None = None):
        import ray

        self.ray = ray
        self.started_here = not ray.is_initialized()
        if self.started_here:
            env = {"env_vars": {k: v for k, v in os.environ.items() if k in ("SERKD_CACHE", "HF_HUB_OFFLINE",
                                                                              "PYTHONPATH", "OMP_NUM_THREADS")}}
            options = {"address": address} if address else {"num_cpus": num_cpus or os.cpu_count()}
            ray.init(**options, runtime_env=env, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        self.remote = ray.remote(num_cpus=cpus_per_unit, num_gpus=gpus_per_unit, max_retries=0)(run_unit)

    def map(self, units: list[dict], fn: Callable[[dict], Outcome] = run_unit) -> Iterator[Outcome]:
        remote = self.remote if fn is run_unit else self.ray.remote(fn)
        pending = {remote.remote(unit): unit for unit in units}
        while pending:
            done, _ = self.ray.wait(list(pending), num_returns=1)
            for ref in done:
                unit = pending.pop(ref)
                try:
                    yield self.ray.get(ref)
                except Exception as exc:  # a worker that died (out of memory, node lost)
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    yield {"key": unit["key"], "status": "failed", "error": f"ray task failed: {first[:300]}"}

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()


def make_executor(kind: str, jobs: int = 1, address: str | None = None, cpus_per_unit: float = 1.0,
                  gpus_per_unit: float = 0.0):
    if kind == "local":
        return LocalExecutor(jobs)
    if kind == "ray":
        return RayExecutor(address, cpus_per_unit, gpus_per_unit, num_cpus=jobs if not address else None)
    from serkd.errors import SerkdError

    raise SerkdError(f"unknown executor {kind!r} (local or ray)")
