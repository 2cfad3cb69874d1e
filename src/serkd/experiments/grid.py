"""The paper's result as one declared grid: students × methods × features × axes × folds × seeds, after a
teacher per fold; run, killed, resumed, spread over processes, GPUs or a Ray cluster.

The grid file (:mod:`serkd.experiments.spec`) declares the units; :func:`run_grid` checks them all, builds
the feature stores once, then runs the teacher units and the student units (:mod:`serkd.experiments.phases`)
on an executor (:mod:`serkd.experiments.executors`). The driver alone writes ``OUT/results.db``
(:mod:`serkd.experiments.store`), storing each unit as it finishes; a unit already there is never run again,
so an interrupted grid (Ctrl-C, SIGKILL) resumes where it stopped. A second ``serkd grid`` on the same
``OUT`` while one runs is refused (a lock). A unit that fails is recorded with its one-line reason and
retried by the next run; the others go on.

Layout of ``OUT``: ``grid.yaml`` (the resolved spec), ``results.db``, ``teacher/`` (the teacher store),
``runs/<unit name>/<fold>/`` (ordinary run folders, :func:`~serkd.experiments.units.unit_name`).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from serkd.experiments.phases import GridSummary, Interrupted, lock, prepare_data, run_phases
from serkd.experiments.spec import GRID_KEYS, GRID_SET, GridSpec, StudentEntry, plan
from serkd.experiments.store import ResultsStore, read_status
from serkd.experiments.units import Unit, unit_key, unit_name
from serkd.io import atomic_write_text
from serkd.layout import DB_NAME
from serkd.train.events import Emitter, Event, OnEvent

__all__ = ["GRID_KEYS", "GRID_SET", "GridSpec", "GridSummary", "Interrupted", "StudentEntry", "Unit", "plan",
           "run_grid", "unit_key", "unit_name"]


def run_grid(spec: GridSpec, executor=None, on_event: OnEvent | None = None, dry_run: bool = False) -> GridSummary:
    """Run (or with ``dry_run`` list) every unit of ``spec`` not already in ``OUT/results.db``. Every unit is
    checked first, dry run or not. Ctrl-C raises :class:`Interrupted` once the finished units are stored."""
    from serkd.experiments.executors import LocalExecutor

    emit = Emitter(on_event)
    out = Path(spec.out)
    units = plan(spec)
    summary = GridSummary(len(units.units))
    if dry_run:
        status = read_status(out / DB_NAME)
        for unit in units.units:
            emit(Event("unit_planned", data={"unit": unit, "status": status.get(unit.key, "pending")}))
        summary.reused = sum(status.get(u.key) == "done" for u in units.units)
        return summary
    out.mkdir(parents=True, exist_ok=True)
    handle = lock(out)
    try:
        atomic_write_text(out / "grid.yaml", yaml.safe_dump(spec.to_dict(), sort_keys=False))
        executor = executor or LocalExecutor(1)
        for note in getattr(executor, "notes", []):
            emit.note(note)
        with ResultsStore(out / DB_NAME) as store:
            done = store.done_keys()
            prepare_data([u for u in units.student_units if u.key not in done], emit)
            run_phases(units, store, executor, emit, summary)
        return summary
    finally:
        handle.close()
