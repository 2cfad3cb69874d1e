"""``serkd grid`` and ``serkd search``: a declared grid of runs, resumable, local (CPU or GPUs) or on Ray."""

from __future__ import annotations

import sys
from pathlib import Path

from serkd.cli.render import EventRenderer, print_json, stderr, stdout
from serkd.layout import DB_NAME
from serkd.train.events import Event

INTERRUPTED = 130  # the shell's code for a command stopped by SIGINT


def add_grid(sub) -> None:
    p = sub.add_parser("grid", help="run a grid of students x methods x features x folds x seeds (resumable)")
    p.add_argument("spec", type=Path, metavar="GRID.yaml", help="the grid (README: 'Experiments at scale')")
    _executor_args(p)
    p.add_argument("--dry-run", action="store_true", help="check every unit and list them and which are done; "
                                                          "train nothing")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_grid)
    s = sub.add_parser("search", help="Optuna search of a method's parameters on validation UA, then test once")
    s.add_argument("spec", type=Path, metavar="SEARCH.yaml", help="a grid YAML with a search: block")
    _executor_args(s)
    s.add_argument("--json", action="store_true",
                   help='print {"best_params", "valid_ua", "trials", "test": {"wa_mean", "ua_mean", "n_folds"}}')
    s.set_defaults(func=cmd_search)


def _executor_args(p) -> None:
    p.add_argument("--jobs", type=int, default=1, help="units at once (local: worker processes; ray, no --address: "
                                                       "the local Ray's CPUs) (default: 1)")
    p.add_argument("--executor", choices=("local", "ray"), default="local", help="where units run (default: local)")
    p.add_argument("--address", help="ray: a running cluster (auto, ray://host:10001); default: a local Ray")
    p.add_argument("--cpus-per-unit", type=float, help="torch threads per unit; ray: CPUs reserved per task "
                                                       "(default: the grid's cpus_per_unit, else 1)")
    p.add_argument("--gpus-per-unit", type=float, help="GPU share per unit, e.g. 0.25: four units per GPU (local: "
                                                       "at most 1/N workers per visible GPU; 0: CPU only) "
                                                       "(default: the grid's gpus_per_unit)")


def _spec(args):
    from serkd.experiments.grid import GridSpec

    spec = GridSpec.from_yaml(args.spec)
    if args.cpus_per_unit is not None:
        spec.cpus_per_unit = args.cpus_per_unit
    if args.gpus_per_unit is not None:
        spec.gpus_per_unit = args.gpus_per_unit
    return spec


def _executor(args, spec):
    from serkd.config import ConfigError
    from serkd.errors import SerkdError
    from serkd.experiments.executors import make_executor

    try:
        return make_executor(args.executor, args.jobs, args.address or spec.ray.get("address"), spec.cpus_per_unit,
                             spec.gpus_per_unit)
    except ConfigError as exc:  # in the words of where the value came from: a flag or the grid file
        flag = f"--{exc.field.replace('_', '-')}"
        where = flag if getattr(args, exc.field, None) is not None else f"{args.spec}: {exc.field}"
        raise SerkdError(f"{where}: {exc.problem}") from None


def cmd_grid(args) -> int:
    from serkd.experiments.grid import Interrupted, run_grid

    spec = _spec(args)
    if args.dry_run:
        planned: list[Event] = []
        summary = run_grid(spec, on_event=planned.append, dry_run=True)
        _show_plan(planned, args.json, summary)
        return 0
    executor = _executor(args, spec)
    try:
        with EventRenderer() as render:
            summary = run_grid(spec, executor, render)
    except Interrupted as stop:
        sys.stderr.write(f"serkd: {stop.line()}\n")
        if args.json:
            print_json(stop.summary.to_json())
        return INTERRUPTED
    finally:
        executor.close()
    if args.json:
        print_json(summary.to_json())
    else:
        show_results(Path(spec.out))
        stderr.print(f"{summary.total} unit(s): {summary.ran} run now, {summary.reused} already done, "
                     f"{len(summary.failed)} failed; results: {Path(spec.out) / DB_NAME}")
    for failure in summary.failed:
        stderr.print(f"[red]failed: {failure['unit']} {failure['fold']}: {failure['error']}")
    return 1 if summary.failed else 0


def _show_plan(events: list[Event], as_json: bool, summary) -> None:
    rows = [{"name": e.data["unit"].name, "kind": e.data["unit"].kind, "fold": e.data["unit"].fold,
             "key": e.data["unit"].key, "status": e.data["status"]} for e in events]
    if as_json:
        print_json({"units": rows, "total": summary.total, "done": summary.reused})
        return
    from rich.table import Table

    table = Table(title=f"{summary.total} unit(s), {summary.reused} done")
    for column in ("unit", "kind", "fold", "key", "status"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["name"], r["kind"], r["fold"], r["key"], r["status"])
    stdout.print(table)


def show_results(out: Path) -> None:
    from serkd.cli.report import show_report

    show_report([out / DB_NAME])


def cmd_search(args) -> int:
    from serkd.experiments.phases import Interrupted
    from serkd.experiments.search import run_search

    spec = _spec(args)
    executor = _executor(args, spec)
    try:
        with EventRenderer() as render:
            result = run_search(spec, executor, render)
    except Interrupted as stop:
        sys.stderr.write(f"serkd: {stop.line()}\n")
        return INTERRUPTED
    if args.json:
        print_json(result)
        return 0
    stdout.print(f"best parameters: {result['best_params']}  (mean validation UA {100 * result['valid_ua']:.2f} "
                 f"over {result['trials']} trial(s))")
    stdout.print(f"test, evaluated once: WA {100 * result['test']['wa_mean']:.2f}  UA "
                 f"{100 * result['test']['ua_mean']:.2f}  ({result['test']['n_folds']} fold(s)), marked "
                 "search-selected")
    return 0
