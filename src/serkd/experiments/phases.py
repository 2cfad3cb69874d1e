"""Running a plan of units, shared by the grid and the search drivers (neither imports the other).

:func:`run_phases` runs the teacher units, then the student units (a student whose teacher fold failed is
recorded as failed with the teacher's reason, without running), each through :func:`execute`: the units
not yet done go to the executor, and each outcome is stored the moment it arrives (the driver is the only
writer of ``results.db``). Ctrl-C stops the executor's workers at once; what had finished is stored, and
:class:`Interrupted` says how much.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from serkd.errors import SerkdError
from serkd.experiments.store import ResultsStore
from serkd.experiments.units import Outcome, Unit, UnitPlan
from serkd.io import try_lock
from serkd.train.events import Emitter, Event


@dataclass
class GridSummary:
    total: int
    ran: int = 0
    reused: int = 0
    failed: list[dict] = field(default_factory=list)
    interrupted: bool = False
    not_run: int = 0

    def to_json(self) -> dict:
        out = {"total": self.total, "ran": self.ran, "reused": self.reused, "failed": self.failed}
        if self.interrupted:
            out.update(interrupted=True, not_run=self.not_run)
        return out


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a grid or search, after its finished units were stored: ``summary`` says what was kept."""

    def __init__(self, summary: GridSummary, store: Path):
        super().__init__()
        self.summary = summary
        self.store = store

    def line(self) -> str:
        s = self.summary
        return (f"interrupted: {s.ran} unit(s) finished and stored in {self.store} by this run ({s.reused} were "
                f"there before), {s.not_run} not run or stopped unfinished; run the same command again to resume")


def lock(out: Path):
    """Hold ``OUT/.grid.lock`` for the driver's lifetime; a second driver on the same OUT is refused."""
    handle = try_lock(out / ".grid.lock")
    if handle is None:
        raise SerkdError(f"{out}: another serkd grid is running on this folder (lock {out / '.grid.lock'}); "
                         "wait for it or choose another out")
    return handle


def prepare_data(units: list[Unit], emit: Emitter) -> None:
    """Build the feature store of every corpus × feature kind the student units read, once, in the driver:
    workers then only open it, and units run in this process reuse it (:func:`units.prepared_data`)."""
    from serkd.config import RunConfig
    from serkd.experiments.units import data_key, prepared_data

    seen = set()
    for unit in units:
        config = RunConfig.from_dict(unit.config).resolved()
        key = data_key(config)
        if key not in seen:
            seen.add(key)
            prepared_data(config, emit)


def execute(units: list[Unit], store: ResultsStore, executor, emit: Emitter, summary: GridSummary,
            blocked: dict[str, str] | None = None, show: str = "test") -> None:
    """Run the units not yet done, storing each outcome as it arrives. ``blocked``: teacher key -> why that
    teacher failed (its students fail with that reason, unrun). ``show``: the score each finished unit prints,
    ``test`` or ``valid`` (a search shows validation only: test is evaluated once, at the end)."""
    status = store.status()
    todo = []
    for unit in units:
        if status.get(unit.key) == "done":
            summary.reused += 1
        elif blocked and unit.teacher_key in blocked:
            outcome = Outcome.failed(unit, f"teacher fold {unit.fold} failed: {blocked[unit.teacher_key]}")
            store.record(unit, outcome)
            summary.failed.append({"unit": unit.name, "fold": unit.fold, "error": outcome.error})
        else:
            todo.append(unit)
    by_key = {u.key: u for u in todo}
    outcomes = executor.map(todo)
    try:
        for finished, outcome in enumerate(outcomes, 1):
            unit = by_key[outcome.key]
            store.record(unit, outcome)
            summary.ran += 1
            where = f"[{finished}/{len(todo)}] {unit.name} {unit.fold}"
            if outcome.ok:
                score = outcome.result["ua" if show == "test" else "valid_ua"]
                emit.info(f"{where}: {show} UA {100 * score:.1f} ({outcome.seconds:.0f} s"
                          f"{', ' + outcome.device if outcome.device not in (None, 'auto') else ''})")
            else:
                summary.failed.append({"unit": unit.name, "fold": unit.fold, "error": outcome.error})
                emit.note(f"{where}: failed: {outcome.error}")
            emit(Event("unit_done", data={"unit": unit, "outcome": outcome}))
    except KeyboardInterrupt:
        summary.interrupted = True
        raise
    finally:
        outcomes.close()


def run_phases(units: UnitPlan, store: ResultsStore, executor, emit: Emitter, summary: GridSummary,
               show: str = "test") -> None:
    """Teacher units first, then the student units; a student whose teacher fold failed fails unrun.
    Ctrl-C: :class:`Interrupted` once the outcomes that had arrived are stored."""
    try:
        execute(units.teacher_units, store, executor, emit, summary, show=show)
        status = store.status()
        blocked = {u.key: store.error_of(u.key) or "not run" for u in units.teacher_units
                   if status.get(u.key) != "done"}
        execute(units.student_units, store, executor, emit, summary, blocked, show=show)
    except KeyboardInterrupt:
        status = store.status()
        summary.interrupted = True
        summary.not_run = sum(u.key not in status for u in units.units)
        raise Interrupted(summary, store.path) from None
