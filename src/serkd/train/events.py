"""Progress and notes from the library to whoever renders them (the CLI uses rich; tests collect them).

The library never prints: it calls ``on_event(Event(...))``. Kinds:

- ``note``: a warning worth reading (``message``); ``info``: a plain status line.
- ``task`` / ``advance`` / ``task_done``: a counted piece of work (``data``: ``id``, ``description``,
  ``total`` / ``n``) such as computing features.
- ``epoch``: one finished epoch (``fold``; ``data``: ``epoch``, ``epochs``, ``train_loss``, ``valid_ua``,
  ``seconds``, ``eta``); ``valid_ua`` is None when nothing is held out (the final model).
- ``fold_done``: a fold's result (``data["result"]``: a FoldResult; ``data["cached"]`` when reused).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Event:
    kind: str
    message: str = ""
    fold: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


OnEvent = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """The default listener: the library runs silently."""


class Emitter:
    """Small helpers around an ``on_event`` callback."""

    def __init__(self, on_event: OnEvent | None = None):
        self.on_event = on_event or ignore

    def __call__(self, event: Event) -> None:
        self.on_event(event)

    def note(self, message: str, fold: str | None = None) -> None:
        self.on_event(Event("note", message, fold))

    def info(self, message: str, fold: str | None = None) -> None:
        self.on_event(Event("info", message, fold))

    def task(self, task_id: str, description: str, total: int) -> Callable[[int], None]:
        """Start a counted task; returns ``advance(n)``. Call :meth:`done` at the end."""
        self.on_event(Event("task", description, data={"id": task_id, "description": description, "total": total}))
        return lambda n=1: self.on_event(Event("advance", data={"id": task_id, "n": n}))

    def done(self, task_id: str) -> None:
        self.on_event(Event("task_done", data={"id": task_id}))


class EpochClock:
    """Seconds per epoch and the ETA of the rest of a fold, for ``epoch`` events; ``held_out=False``: no
    speaker is held out, so no validation score is reported."""

    def __init__(self, emit: Emitter, fold: str, epochs: int, label: str, held_out: bool = True):
        import time

        self._time = time.perf_counter
        self.emit, self.fold, self.epochs, self.label, self.held_out = emit, fold, epochs, label, held_out
        self.started = self._time()

    def epoch(self, record: dict) -> None:
        elapsed = self._time() - self.started
        epoch = record["epoch"]
        eta = elapsed / epoch * (self.epochs - epoch)
        self.emit(Event("epoch", fold=self.fold, data={
            "label": self.label, "epoch": epoch, "epochs": self.epochs, "train_loss": record["train_loss"],
            "valid_ua": record["valid_ua"] if self.held_out else None,
            "seconds": record.get("seconds", record.get("train_s", 0.0) + record.get("valid_s", 0.0)),
            "eta": eta}))
