"""Hyper-parameter search on validation only: ``serkd search SEARCH.yaml``.

A grid YAML plus::

    search: {method: ckd, params: {lambda_1: [1.0e-4, 1.0e-1, log], lambda_2: [1.0e-4, 1.0e-1, log]}, trials: 20}

Each trial samples the method's parameters (Optuna's TPE sampler, seeded), trains that method for
every student × features × fold × seed of the grid, and scores the mean **validation** UA of those
units: the test speakers never enter the objective. The trials' units are stored in ``results.db`` as
kind ``trial`` (never shown by ``serkd report``). When all trials are done, the best parameters are
evaluated on test once: the same units, stored as students and marked ``search-selected`` (they
reuse the best trial's trained folds, so nothing is trained twice). While it runs, every unit's line shows
its validation UA; the test scores appear once, at the end.

Storage: Optuna's RDB storage in ``OUT/search.db`` (SQLite). Only this driver process writes it (the
workers return results), which is the one-writer case SQLite handles well; Optuna's journal file
backend is its recommendation for several *processes* writing one study, which this design never
does. The study is named after the grid and loaded if it exists, so a search resumes to ``trials`` in
total.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serkd.config import ConfigError
from serkd.errors import SerkdError
from serkd.experiments.phases import GridSummary, lock, prepare_data, run_phases
from serkd.experiments.spec import GridSpec, plan
from serkd.experiments.store import ResultsStore
from serkd.hashing import stable_hash
from serkd.layout import DB_NAME
from serkd.train.events import Emitter, OnEvent
from serkd.train.results import MARK_SEARCH_SELECTED

SEARCH_DB = "search.db"


@dataclass
class SearchSpec:
    method: str
    params: dict[str, list]
    trials: int
    seed: int = 0

    @classmethod
    def from_grid(cls, spec: GridSpec) -> SearchSpec:
        data = spec.search
        if not isinstance(data, dict):
            raise ConfigError("search", "required: {method, params: {name: [low, high, log]}, trials}", spec.source)
        unknown = sorted(set(data) - {"method", "params", "trials", "seed"})
        if unknown:
            raise ConfigError(f"search.{unknown[0]}", "unknown key (known: method, params, trials, seed)",
                              spec.source)
        method, params, trials = data.get("method"), data.get("params"), data.get("trials", 20)
        if not method:
            raise ConfigError("search.method", "required", spec.source)
        if not isinstance(params, dict) or not params:
            raise ConfigError("search.params", "expected {name: [low, high, log|linear]} or {name: [choice, ...]}",
                              spec.source)
        for name, space in params.items():
            if not isinstance(space, list) or not space:
                raise ConfigError(f"search.params.{name}", "expected [low, high, log|linear] or a list of choices",
                                  spec.source)
            if _is_range(space) and not space[0] < space[1]:
                raise ConfigError(f"search.params.{name}", "low must be below high", spec.source)
            if _is_range(space) and len(space) == 3 and space[2] == "log" and space[0] <= 0:
                raise ConfigError(f"search.params.{name}", "a log range needs low > 0", spec.source)
        if not isinstance(trials, int) or trials < 1:
            raise ConfigError("search.trials", "must be a whole number >= 1", spec.source)
        return cls(str(method), dict(params), trials, int(data.get("seed", 0)))

    def sample(self, trial) -> dict:
        out = {}
        for name, space in self.params.items():
            if _is_range(space):
                low, high = float(space[0]), float(space[1])
                log = len(space) == 3 and space[2] == "log"
                out[name] = trial.suggest_float(name, low, high, log=log)
            else:
                out[name] = trial.suggest_categorical(name, space)
        return out


def _is_range(space: list) -> bool:
    return len(space) in (2, 3) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in space[:2]) \
        and (len(space) == 2 or space[2] in ("log", "linear"))


def _trial_dir(out: Path, params: dict) -> str:
    tag = stable_hash(params, 10)
    return str(out / "search" / tag)


def run_search(spec: GridSpec, executor=None, on_event: OnEvent | None = None) -> dict:
    """Run the search to ``trials`` completed trials in total, then evaluate the best on test once. While it
    searches, only validation scores are shown; test appears once, in the returned result."""
    import optuna

    from serkd.experiments.executors import LocalExecutor

    emit = Emitter(on_event)
    search = SearchSpec.from_grid(spec)
    if search.method not in spec.methods:
        spec.methods = {**spec.methods, search.method: {}}
    base_params = spec.methods[search.method]
    plan(spec, {search.method: base_params}, kind="trial")  # every problem before the first trial trains
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    handle = lock(out)
    executor = executor or LocalExecutor(1)
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        logging.getLogger("optuna").setLevel(logging.WARNING)
        study = optuna.create_study(study_name=spec.name, storage=f"sqlite:///{(out / SEARCH_DB).resolve()}",
                                    direction="maximize", sampler=optuna.samplers.TPESampler(seed=search.seed),
                                    load_if_exists=True)
        with ResultsStore(out / DB_NAME) as store:
            prepared = False

            def objective(trial) -> float:
                nonlocal prepared
                params = {**base_params, **search.sample(trial)}
                trial_plan = plan(spec, {search.method: params}, kind="trial", out_root=_trial_dir(out, params))
                if not prepared:
                    prepare_data(trial_plan.student_units, emit)
                    prepared = True
                summary = GridSummary(len(trial_plan.units))
                run_phases(trial_plan, store, executor, emit, summary, show="valid")
                if summary.failed:
                    raise optuna.TrialPruned(f"{len(summary.failed)} unit(s) failed: {summary.failed[0]['error']}")
                valid = _valid(store.results(u.key for u in trial_plan.student_units))
                value = float(np.mean(valid))
                emit.info(f"trial {trial.number}: {params} -> mean validation UA {100 * value:.2f} "
                          f"({len(valid)} units)")
                return value

            completed = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
            if completed < search.trials:
                study.optimize(objective, n_trials=search.trials - completed, catch=())
            complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
            if not complete:
                raise SerkdError(f"{spec.out}: no trial completed (see the failed units in {out / DB_NAME})")
            best = {**base_params, **study.best_params}
            emit.info(f"best: {best} (mean validation UA {100 * study.best_value:.2f}); evaluating on test once")
            final = plan(spec, {search.method: best}, kind="student", out_root=_trial_dir(out, best))
            summary = GridSummary(len(final.units))
            run_phases(final, store, executor, emit, summary, show="valid")
            if summary.failed:
                raise SerkdError(f"evaluating the best parameters failed: {summary.failed[0]['error']}")
            for unit in final.student_units:
                store.add_mark(unit.key, MARK_SEARCH_SELECTED)
            rows = store.results(u.key for u in final.student_units)
        return {"best_params": best, "valid_ua": float(study.best_value), "trials": len(complete),
                "test": {"wa_mean": float(np.mean([r["wa"] for r in rows])),
                         "ua_mean": float(np.mean([r["ua"] for r in rows])),
                         "n_folds": len(rows)}}
    finally:
        executor.close()
        handle.close()


def _valid(results: list[dict]) -> list[float]:
    """The validation UA of each finished unit (a unit without validation speakers has none: left out)."""
    return [r["valid_ua"] for r in results if r.get("valid_ua") is not None and not math.isnan(r["valid_ua"])]
