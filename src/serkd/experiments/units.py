"""The unit of work of grids and searches: one teacher fold, or one student fold of one configuration and seed.

A :class:`Unit` is plain data (picklable, sent to worker processes and Ray tasks): its kind, the resolved
config as a dict, the fold, its key (a hash of everything that decides its result) and the key of the
teacher unit it needs. :func:`run_unit` trains it through the public training API and returns an
:class:`Outcome`; it never raises for a failed unit (the outcome carries a one-line reason), so one bad
unit cannot stop the others.

Per-process cache: the corpus' manifest, its data hash and the memory-mapped features are prepared once
per process for every unit that reads the same data (:func:`prepared_data`, keyed by every config field
except those that only change training) and handed to ``train_fold(config, fold, data=...)``; without
it every unit re-read the manifest, re-hashed the audio and reopened the feature store (8.8 % of a small
unit's time, benchmarks/bench_grid.py).

Threads: every unit sets torch's intra-op threads to the config's ``threads`` (the grid's default is
``cpus_per_unit``, else 1), whichever executor runs it. Oversubscribed processes, not compute, decide
throughput on a shared CPU (one 15-epoch mobilenet fold took 1015 s with torch's default threads beside
other busy processes, 67 s with one thread per process), and a fixed thread count keeps results
bit-identical across executors on CPU.
"""

from __future__ import annotations

import dataclasses
import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from serkd.hashing import stable_hash

KINDS = ("teacher", "student", "trial")
# student config fields that change how a fold trains but not the data it reads (features, folds): units
# differing only in these share one prepared corpus; any other field (one added tomorrow) keeps them apart
TRAINING_ONLY = ("student", "student_params", "method", "method_params", "teacher", "seed", "epochs", "batch_size",
                 "lr", "weight_decay", "step_size", "gamma", "allow_leaky_teacher", "allow_stale_teacher",
                 "seed_softmax", "recipe", "time_shift", "freq_masks", "freq_mask_width", "time_masks",
                 "time_mask_width", "mixup", "balanced_sampling", "schedule", "warmup_epochs", "patience")
MAX_PREPARED = 4  # corpora × feature kinds a worker keeps open (memory-mapped: cheap)


@dataclass
class Unit:
    """One fold of one configuration: what an executor runs and the results store records."""

    key: str
    kind: str  # teacher | student | trial
    name: str  # the configuration's name (the run folder under OUT/runs/ or OUT/search/)
    fold: str
    config: dict[str, Any]  # RunConfig (student, trial) or TeacherConfig (teacher) fields
    data_hash: str
    teacher_key: str | None = None  # the teacher unit this one distils from (None: no teacher, or a given store)

    @property
    def device(self) -> str:
        return str(self.config.get("device") or "auto")

    def placed(self, device: str | None) -> Unit:
        """This unit on ``device`` (an executor's placement), unless its config names a device itself."""
        if device is None or self.device != "auto":
            return self
        return dataclasses.replace(self, config={**self.config, "device": device})

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Outcome:
    """What came of a unit: ``done`` with its FoldResult JSON, or ``failed`` with a one-line reason."""

    key: str
    status: str  # done | failed
    result: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0
    device: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "done"

    @classmethod
    def failed(cls, unit: Unit, error: str, seconds: float = 0.0) -> Outcome:
        return cls(unit.key, "failed", error=error, seconds=seconds, device=unit.device)


def unit_name(student: str, features: str, method: str, params: dict, seed: int, student_params: dict | None = None,
              axes: dict | None = None) -> str:
    """``student[-options]-features-method[-params hash][-axes]-seed<S>``, e.g.
    ``lightsernet-pooling=stats-mel-kd-ba67cf-recipe=strong-seed0``: every grid dimension that differs shows."""
    method_tag = f"-{stable_hash(params, 6)}" if params else ""
    student_tag = f"-{tag(student_params)}" if student_params else ""
    axes_tag = f"-{tag(axes)}" if axes else ""
    name = f"{student}{student_tag}-{features}-{method}{method_tag}{axes_tag}-seed{seed}"
    return name.replace("/", "_").replace(" ", "_")


def tag(values: dict, limit: int = 40) -> str:
    """``key=value,key=value`` when short and plain, else a 6-digit hash: a readable, unique folder-name part."""
    text = ",".join(f"{k}={v}" for k, v in sorted(values.items()))
    plain = all(isinstance(v, str | int | float | bool) for v in values.values())
    if plain and len(text) <= limit and all(c.isalnum() or c in "=,._+-" for c in text):
        return text
    return stable_hash(values, 6)


def unit_key(config: dict, fold: str, data_hash: str, teacher_key: str | None, kind: str) -> str:
    """What decides a unit's result: its config (less where it runs and writes), fold, data, teacher and kind."""
    payload = {"config": {k: v for k, v in config.items() if k not in ("folds", "out", "threads", "device")},
               "fold": fold, "data_hash": data_hash, "teacher": teacher_key, "kind": kind}
    return stable_hash(payload)


# ---------------------------------------------------------------- running a unit

_prepared: dict[str, Any] = {}  # this process' prepared corpora (serkd.train.run.PreparedData), by data key


def data_key(config) -> str:
    """Every field of a (resolved) student config that can change the data it reads, and where it lies."""
    values = {k: v for k, v in config.hashed_dict().items() if k not in TRAINING_ONLY}
    return stable_hash({**values, "root": config.root, "skip_bad": config.skip_bad})


def prepared_data(config, emit=None):
    """The corpus, its folds and its features for ``config`` as ``serkd.train.run.prepare`` returns them, built
    once per process and data key (every fold of the corpus, so any unit's fold is there); ``emit`` hears the
    feature progress when they are built."""
    from serkd.train import run
    from serkd.train.events import Emitter

    config = config.resolved()
    key = data_key(config)
    if key not in _prepared:
        # the data only: every fold, no teacher (each unit's own is checked by train_fold), no run folder
        probe = config.replace(folds=None, method="ce", method_params={}, teacher=None,
                               out=os.path.join(os.devnull, "serkd-data-probe"))
        checked = run.plan(probe)
        data = run.prepare(probe, checked.manifest, checked.folds, emit or Emitter(), checked.data_hash,
                           checked.feature_config)
        while len(_prepared) >= MAX_PREPARED:
            _prepared.pop(next(iter(_prepared)))
        _prepared[key] = data
    return _prepared[key]


def clear_prepared() -> None:
    """Forget this process' prepared corpora (tests; a corpus rewritten in place)."""
    _prepared.clear()


def warm_up() -> None:
    """Load what every unit needs (torch, the training code): a worker does it once when it starts."""
    import torch  # noqa: F401

    import serkd.train.run
    import serkd.train.teachers  # noqa: F401


def run_unit(unit: Unit) -> Outcome:
    """Train one unit (a student fold or a teacher fold); a failure is an outcome, never an exception
    (except Ctrl-C, which stops the process' work)."""
    started = time.perf_counter()
    try:
        import torch

        from serkd.config import RunConfig, TeacherConfig

        torch.set_num_threads(int(unit.config.get("threads") or 1))
        if unit.kind == "teacher":
            from serkd.train.teachers import train_teacher

            (result,) = train_teacher(TeacherConfig.from_dict(unit.config))
        else:
            from serkd.train.run import train_fold

            config = RunConfig.from_dict(unit.config)
            result = train_fold(config, unit.fold, data=prepared_data(config))
        return Outcome(unit.key, "done", result=result.to_json(), seconds=round(time.perf_counter() - started, 2),
                       device=unit.device)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a unit's failure, whatever it is, is its outcome
        return Outcome.failed(unit, one_line(exc), round(time.perf_counter() - started, 2))


def one_line(exc: BaseException) -> str:
    """The first line of an error; where it came from too, unless it is a user error (bad input, config)."""
    from serkd.errors import SerkdError

    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    origin = f" ({type(exc).__name__} at {os.path.basename(where.filename)}:{where.lineno})" if where and \
        not isinstance(exc, SerkdError) else ""
    return first[:300] + origin


@dataclass
class UnitPlan:
    """The units of a grid (or of a search trial): teachers first, then the students that need them."""

    folds: list[str]
    data_hash: str
    teacher_units: list[Unit] = field(default_factory=list)
    student_units: list[Unit] = field(default_factory=list)

    @property
    def units(self) -> list[Unit]:
        return [*self.teacher_units, *self.student_units]
