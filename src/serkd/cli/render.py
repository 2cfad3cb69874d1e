"""Rendering for the CLI: consoles, JSON, and the listener that turns library events into rich
progress bars on a terminal and one plain line per epoch elsewhere (CI logs, pipes, files)."""

from __future__ import annotations

import json
import sys

import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from serkd.errors import SerkdError
from serkd.train.events import Event

# rich shrinks tables to 80 columns when not on a terminal (CI, pipes): give them room instead
stdout = Console(width=None if sys.stdout.isatty() else 160)
stderr = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def parse_params(pairs: list[str] | None, flag: str = "--method-param") -> dict:
    """``key=value`` pairs; numbers (``1e-3`` included), booleans and lists are typed, the rest stay text."""
    params = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SerkdError(f"{flag} expects key=value, got {pair!r}")
        params[key.strip()] = scalar(value.strip())
    return params


def scalar(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return yaml.safe_load(text)  # true/false, null, [1, 2] ...


class EventRenderer:
    """Library events -> the terminal. Use as a context manager around a library call."""

    def __init__(self, console: Console = stderr, live: bool | None = None):
        self.console = console
        self.live = console.is_terminal if live is None else live
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> EventRenderer:
        if self.live:
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                     console=self.console, transient=True)
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress:
            self.progress.stop()

    def _print(self, text: str, style: str | None = None) -> None:
        (self.progress.console if self.progress else self.console).print(text, style=style, highlight=False,
                                                                        markup=False)

    def __call__(self, event: Event) -> None:
        handler = getattr(self, "_" + event.kind, None)
        if handler:
            handler(event)

    def _note(self, event: Event) -> None:
        self._print(event.message, "yellow")

    def _info(self, event: Event) -> None:
        self._print(event.message)

    def _task(self, event: Event) -> None:
        if self.progress:
            self.tasks[event.data["id"]] = self.progress.add_task(event.data["description"],
                                                                  total=event.data["total"])

    def _advance(self, event: Event) -> None:
        if self.progress and event.data["id"] in self.tasks:
            self.progress.advance(self.tasks[event.data["id"]], event.data.get("n", 1))

    def _task_done(self, event: Event) -> None:
        task = self.tasks.pop(event.data["id"], None)
        if self.progress and task is not None:
            self.progress.remove_task(task)

    def _epoch(self, event: Event) -> None:
        d = event.data
        # the final model holds nothing out: no validation score to show
        score = "no held-out speakers" if d["valid_ua"] is None else f"valid UA {100 * d['valid_ua']:.1f}"
        line = f"{event.fold} {d['label']} epoch {d['epoch']}/{d['epochs']}  train loss {d['train_loss']:.4f}  {score}"
        if not self.progress:
            self._print(f"{line}  {d['seconds']:.1f} s  ETA {d['eta']:.0f} s")
            return
        key = f"epochs:{event.fold}:{d['label']}"
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(line, total=d["epochs"])
        self.progress.update(self.tasks[key], completed=d["epoch"], description=line)
        if d["epoch"] == d["epochs"]:
            self.progress.remove_task(self.tasks.pop(key))
