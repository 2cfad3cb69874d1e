"""``serkd grid`` and ``serkd search``: a declared grid of runs, resumable, local or on Ray."""

from __future__ import annotations

from pathlib import Path

from serkd.cli.render import EventRenderer, print_json, stderr, stdout
from serkd.layout import DB_NAME
from serkd.train.events import Event


def add_grid(sub) -> None:
    p = sub.add_parser("grid", help="run a grid of students x methods x features x folds x seeds (resumable)")
    p.add_argument("spec", type=Path, metavar="GRID.yaml", help="the grid (README: 'Experiments at scale')")
    _executor_args(p)
    p.add_argument("--dry-run", action="store_true", help="list the units and which are done; train nothing")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_grid)
    s = sub.add_parser("search", help="Optuna search of a method's parameters on validation UA, then test once")
    s.add_argument("spec", type=Path, metavar="SEARCH.yaml", help="a grid YAML with a search: block")
    _executor_args(s)
    s.add_argument("--json", action="store_true",
                   help='print {"best_params", "valid_ua", "trials", "test": {"wa_mean", "ua_mean", "n_folds"}}')
    s.set_defaults(func=cmd_search)


def _executor_args(p) -> None:
    p.add_argument("--jobs", type=int, default=1, help="units at once (local: worker processes) (default: 1)")
    p.add_argument("--executor", choices=("local", "ray"), default="local", help="where units run (default: local)")
    p.add_argument("--address", help="ray: a running cluster (auto, ray://host:10001); default: a local Ray")
    p.add_argument("--cpus-per-unit", type=float, help="ray: CPUs per unit (default: the grid's ray block, else 1)")
    p.add_argument("--gpus-per-unit", type=float, help="ray: GPUs per unit, e.g. 0.25 (default: the grid's ray "
                                                       "block, else 0)")


def _executor(args, spec):
    from serkd.errors import SerkdError
    from serkd.experiments.executors import make_executor

    if args.jobs < 1:
        raise SerkdError("--jobs must be at least 1")
    cpus = args.cpus_per_unit if args.cpus_per_unit is not None else spec.ray.get("cpus_per_unit", 1.0)
    gpus = args.gpus_per_unit if args.gpus_per_unit is not None else spec.ray.get("gpus_per_unit", 0.0)
    return make_executor(args.executor, args.jobs, args.address or spec.ray.get("address"), cpus, gpus)


def cmd_grid(args) -> int:
    from serkd.experiments.grid import GridSpec, run_grid

    spec = GridSpec.from_yaml(args.spec)
    if args.dry_run:
        planned: list[Event] = []
        summary = run_grid(spec, on_event=planned.append, dry_run=True)
        _show_plan(planned, args.json, summary)
        return 0
    executor = _executor(args, spec)
    try:
        with EventRenderer() as render:
            summary = run_grid(spec, executor, render)
    finally:
        executor.close()
    if args.json:
        print_json(summary.to_json())
    else:
        show_results(Path(spec.out))
        stderr.print(f"{summary.total} unit(s): {summary.ran} run now, {summary.reused} already done, "
                     f"{len(summary.failed)} failed; results: {Path(spec.out) / 'results.db'}")
    for failure in summary.failed:
        stderr.print(f"[red]failed: {failure['unit']} {failure['fold']}: {failure['error']}")
    return 1 if summary.failed else 0


def _show_plan(events: list[Event], as_json: bool, summary) -> None:
    rows = [{"name": e.data["unit"]["name"], "kind": e.data["unit"]["kind"], "fold": e.data["unit"]["fold"],
             "key": e.data["unit"]["key"], "status": e.data["status"]} for e in events]
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


def cmd_search(args) -> None:
    from serkd.experiments.grid import GridSpec
    from serkd.experiments.search import run_search

    spec = GridSpec.from_yaml(args.spec)
    executor = _executor(args, spec)
    with EventRenderer() as render:
        result = run_search(spec, executor, render)
    if args.json:
        print_json(result)
        return
    stdout.print(f"best parameters: {result['best_params']}  (mean validation UA {100 * result['valid_ua']:.2f} "
                 f"over {result['trials']} trial(s))")
    stdout.print(f"test, evaluated once: WA {100 * result['test']['wa_mean']:.2f}  UA "
                 f"{100 * result['test']['ua_mean']:.2f}  ({result['test']['n_folds']} fold(s)), marked "
                 "search-selected")
