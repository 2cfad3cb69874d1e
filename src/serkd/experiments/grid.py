"""The paper's result as one declared grid: students × methods × features × folds × seeds, after a
teacher per fold; run, killed, resumed, spread over processes or a Ray cluster.

    name: tiny
    corpus: {kind: synth, root: data/synth}
    out: runs/tiny                 # results.db and per-unit run folders
    features: [mel]                # or [mel, mfcc]
    students: [lightsernet]        # any registered student or timm name
    methods:                       # name: parameters (seed defaults where omitted)
      ce: {}
      ckd: {lambda_1: 0.001, lambda_2: 0.015}
    teacher: {model: resnet18, epochs: 10}   # or {store: DIR}, or a WavLM hub id / folder as model
    folds: all                     # or [0, 2]
    seeds: [0]
    train: {epochs: 30}            # any student-run config field

Every combination × fold × seed is one unit, keyed by a hash of its resolved config, fold, seed,
teacher and data hash. Teacher folds run first (units too), then the students that need them. The
driver alone writes ``OUT/results.db`` (:mod:`serkd.experiments.store`); a unit already there is
never run again, so an interrupted grid resumes where it stopped. A second ``serkd grid`` on the same
``OUT`` while one runs is refused (a lock). A unit that fails is recorded with its one-line reason
and retried by the next run; the others go on.

Layout of ``OUT``: ``grid.yaml`` (the resolved spec), ``results.db``, ``teacher/`` (the teacher store),
``runs/<student>-<features>-<method>[-<params hash>]-seed<S>/<fold>/`` (ordinary run folders).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from serkd.config import ConfigError, RunConfig, TeacherConfig
from serkd.errors import SerkdError
from serkd.experiments.store import ResultsStore
from serkd.hashing import stable_hash
from serkd.io import atomic_write_text, read_yaml, try_lock
from serkd.layout import DB_NAME
from serkd.train.events import Emitter, Event, OnEvent

# the grid sets these per unit: a `train:` block may not
GRID_SET = ("corpus", "root", "corpus_options", "out", "features", "student", "method", "method_params", "seed",
            "folds", "teacher")
GRID_KEYS = ("name", "corpus", "out", "features", "students", "methods", "teacher", "folds", "seeds", "train",
             "ray", "search")


@dataclass
class GridSpec:
    name: str
    corpus: dict
    out: str
    features: list[str] = field(default_factory=lambda: ["mel"])
    students: list[str] = field(default_factory=lambda: ["lightsernet"])
    methods: dict[str, dict] = field(default_factory=lambda: {"ce": {}})
    teacher: dict | None = None
    folds: Any = "all"
    seeds: list[int] = field(default_factory=lambda: [0])
    train: dict = field(default_factory=dict)
    ray: dict = field(default_factory=dict)
    search: dict | None = None
    source: str | None = None  # the YAML file, for messages

    @classmethod
    def from_yaml(cls, path: str | Path) -> GridSpec:
        path = Path(path)
        return cls.from_dict(read_yaml(path, "grid"), str(path))

    @classmethod
    def from_dict(cls, data: dict, source: str | None = None) -> GridSpec:
        if not isinstance(data, dict):
            raise SerkdError(f"{source or 'grid'}: expected a mapping of grid keys")
        unknown = sorted(set(data) - set(GRID_KEYS))
        if unknown:
            raise ConfigError(unknown[0], f"unknown grid key (known: {', '.join(GRID_KEYS)})", source)
        for key in ("name", "corpus", "out"):
            if not data.get(key):
                raise ConfigError(key, "required", source)
        corpus = data["corpus"]
        if not isinstance(corpus, dict) or not corpus.get("kind") or not corpus.get("root"):
            raise ConfigError("corpus", "expected {kind: ..., root: ...[, options: {...}]}", source)
        methods = data.get("methods") or {"ce": {}}
        if isinstance(methods, list):
            methods = {m: {} for m in methods}
        if not isinstance(methods, dict) or not all(isinstance(v or {}, dict) for v in methods.values()):
            raise ConfigError("methods", "expected {method: {parameter: value}}", source)
        spec = cls(name=str(data["name"]), corpus=dict(corpus), out=str(data["out"]),
                   features=_as_list(data.get("features", ["mel"])), students=_as_list(data.get("students",
                                                                                               ["lightsernet"])),
                   methods={m: dict(p or {}) for m, p in methods.items()}, teacher=data.get("teacher"),
                   folds=data.get("folds", "all"), seeds=[int(s) for s in _as_list(data.get("seeds", [0]))],
                   train=dict(data.get("train") or {}), ray=dict(data.get("ray") or {}), search=data.get("search"),
                   source=source)
        spec.validate()
        return spec

    def to_dict(self) -> dict:
        return {"name": self.name, "corpus": self.corpus, "out": self.out, "features": self.features,
                "students": self.students, "methods": self.methods, "teacher": self.teacher, "folds": self.folds,
                "seeds": self.seeds, "train": self.train, "ray": self.ray,
                **({"search": self.search} if self.search else {})}

    def validate(self) -> None:
        """Every check that needs no data, each naming the grid key (``methods.ckd: ...``)."""
        bad = sorted(set(self.train) & set(GRID_SET))
        if bad:
            raise ConfigError(f"train.{bad[0]}", "is set by the grid itself (use the grid key)", self.source)
        for method, params in self.methods.items():
            self.student_config(self.students[0] if self.students else "lightsernet", self.features[0], method,
                                params, 0, "0", None, check=f"methods.{method}")
        if not self.students:
            raise ConfigError("students", "at least one student", self.source)
        if not self.seeds:
            raise ConfigError("seeds", "at least one seed", self.source)
        if self.needs_teacher() and not self.teacher:
            needing = [m for m in self.methods if _needs_teacher(m, self.methods[m])]
            raise ConfigError("teacher", f"methods {', '.join(needing)} need a teacher ({{model: ...}} or "
                                         "{store: DIR})", self.source)
        if self.teacher is not None:
            if not isinstance(self.teacher, dict) or not (self.teacher.get("model") or self.teacher.get("store")):
                raise ConfigError("teacher", "expected {model: NAME, ...} or {store: DIR}", self.source)
            if self.teacher.get("model"):
                self.teacher_config("0")

    def needs_teacher(self) -> bool:
        return any(_needs_teacher(m, p) for m, p in self.methods.items())

    def corpus_fields(self) -> dict:
        return {"corpus": self.corpus["kind"], "root": str(self.corpus["root"]),
                "corpus_options": dict(self.corpus.get("options") or {})}

    def folds_spec(self) -> str | None:
        if self.folds in (None, "all"):
            return None
        return ",".join(str(f) for f in _as_list(self.folds))

    def teacher_store(self) -> str | None:
        if not self.teacher:
            return None
        return str(self.teacher["store"]) if self.teacher.get("store") else str(Path(self.out) / "teacher")

    def teacher_config(self, fold: str) -> TeacherConfig:
        values = {k: v for k, v in self.teacher.items() if k != "store"}
        # the students' crop, selection rule and device carry over to a teacher that has them
        inherited = ("length", "select", "device", "skip_bad", "threads")
        inherited = tuple(k for k in inherited if k in TeacherConfig.kind_config(values["model"]).field_names())
        values = {"threads": 1, **{k: v for k, v in self.train.items() if k in inherited},
                  **values, **self.corpus_fields(), "out": self.teacher_store(), "folds": fold}
        try:
            config = TeacherConfig.from_dict(values)
            config.validate()
        except ConfigError as exc:
            raise ConfigError(f"teacher.{exc.field}", exc.problem, self.source) from None
        return config

    def student_config(self, student: str, features: str, method: str, params: dict, seed: int, fold: str,
                       teacher: str | None, check: str | None = None, out: str | None = None) -> RunConfig:
        values = {"threads": 1, **self.train, **self.corpus_fields(), "features": features, "student": student,
                  "method": method, "method_params": params, "seed": seed, "folds": fold,
                  "teacher": teacher if _needs_teacher(method, params) else None,
                  "out": out or str(Path(self.out) / "runs" / unit_name(student, features, method, params, seed))}
        try:
            config = RunConfig.from_dict(values)
            config.validate()
            if check:
                from serkd.train.run import make_loss

                make_loss(method, params)
        except ConfigError as exc:
            where = check if exc.field in ("method", "method_params") and check else (
                f"train.{exc.field}" if exc.field in self.train else exc.field)
            raise ConfigError(where, exc.problem, self.source) from None
        return config


def _as_list(value) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


def _needs_teacher(method: str, params: dict) -> bool:
    from serkd import distill

    try:
        return bool(distill.get(method).needs_teacher)
    except ValueError:
        return False  # unknown methods are reported by make_loss, naming the grid key


def unit_name(student: str, features: str, method: str, params: dict, seed: int) -> str:
    tag = f"-{stable_hash(params, 6)}" if params else ""
    return f"{student}-{features}-{method}{tag}-seed{seed}".replace("/", "_")


def unit_key(config: dict, fold: str, data_hash: str, teacher_key: str | None, kind: str) -> str:
    payload = {"config": {k: v for k, v in config.items() if k not in ("folds", "out", "threads", "device")},
               "fold": fold, "data_hash": data_hash, "teacher": teacher_key, "kind": kind}
    return stable_hash(payload)


@dataclass
class Plan:
    spec: GridSpec
    folds: list[str]
    data_hash: str
    teacher_units: list[dict]
    student_units: list[dict]

    @property
    def units(self) -> list[dict]:
        return [*self.teacher_units, *self.student_units]


def plan(spec: GridSpec, methods: dict[str, dict] | None = None, kind: str = "student",
         out_root: str | None = None) -> Plan:
    """Every unit of the grid (or of ``methods`` only: a search trial), with keys; reads the corpus once."""
    from serkd.train.fold import load_manifest, run_folds

    probe = spec.student_config(spec.students[0], spec.features[0], "ce", {}, spec.seeds[0], "0", None)
    probe = probe.replace(folds=spec.folds_spec())
    try:
        manifest = load_manifest(probe)
        folds = [f.name for f in run_folds(probe, manifest)]
    except ConfigError as exc:
        raise ConfigError("folds" if exc.field == "folds" else exc.field, exc.problem, spec.source) from None
    data_hash = manifest.data_hash()
    teacher_units, teacher_keys = [], {}
    methods = spec.methods if methods is None else methods
    if spec.teacher and spec.teacher.get("model") and any(_needs_teacher(m, p) for m, p in methods.items()):
        for fold in folds:
            config = spec.teacher_config(fold).to_dict()
            key = unit_key(config, fold, data_hash, None, "teacher")
            teacher_keys[fold] = key
            teacher_units.append({"key": key, "kind": "teacher", "name": "teacher", "fold": fold, "config": config,
                                  "data_hash": data_hash})
    student_units = []
    for features in spec.features:
        for student in spec.students:
            for method, params in methods.items():
                for seed in spec.seeds:
                    name = unit_name(student, features, method, params, seed)
                    out = str(Path(out_root) / name) if out_root else None
                    for fold in folds:
                        config = spec.student_config(student, features, method, params, seed, fold,
                                                     spec.teacher_store(), out=out).to_dict()
                        teacher_key = teacher_keys.get(fold) if config["teacher"] else None
                        if config["teacher"] and spec.teacher.get("store"):
                            teacher_key = f"store:{spec.teacher['store']}"
                        student_units.append({
                            "key": unit_key(config, fold, data_hash, teacher_key, kind), "kind": kind,
                            "name": name, "fold": fold, "config": config, "data_hash": data_hash,
                            "teacher_key": teacher_keys.get(fold) if config["teacher"] else None})
    return Plan(spec, folds, data_hash, teacher_units, student_units)


@dataclass
class GridSummary:
    total: int
    ran: int = 0
    reused: int = 0
    failed: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"total": self.total, "ran": self.ran, "reused": self.reused, "failed": self.failed}


def lock(out: Path):
    """Hold ``OUT/.grid.lock`` for the driver's lifetime; a second driver on the same OUT is refused."""
    handle = try_lock(out / ".grid.lock")
    if handle is None:
        raise SerkdError(f"{out}: another serkd grid is running on this folder (lock {out / '.grid.lock'}); "
                         "wait for it or choose another out")
    return handle


def precompute_features(spec: GridSpec, emit: Emitter) -> None:
    """Fill the feature cache once in the driver, so workers only read it."""
    from serkd.data.features import FeatureConfig, feature_matrix
    from serkd.train.fold import load_manifest

    for features in spec.features:
        config = spec.student_config(spec.students[0], features, "ce", {}, spec.seeds[0], "0", None)
        manifest = load_manifest(config)
        advance = emit.task(f"features:{features}", f"features ({features})", len(manifest))
        _, _, cache = feature_matrix(manifest, FeatureConfig(features, config.crop_length), config.skip_bad, advance)
        emit.done(f"features:{features}")
        emit.info(f"features ({features}): {cache.computed} computed, {cache.reused} from cache")


def execute(units: list[dict], store: ResultsStore, executor, emit: Emitter, summary: GridSummary,
            blocked: dict[str, str] | None = None) -> None:
    """Run the units not yet done, recording each outcome as it arrives (the driver is the only writer)."""
    status = store.status()
    todo = []
    for unit in units:
        if status.get(unit["key"]) == "done":
            summary.reused += 1
        elif blocked and unit.get("teacher_key") in blocked:
            outcome = {"key": unit["key"], "status": "failed",
                       "error": f"teacher fold {unit['fold']} failed: {blocked[unit['teacher_key']]}"}
            store.record(unit, outcome)
            summary.failed.append({"unit": unit["name"], "fold": unit["fold"], "error": outcome["error"]})
        else:
            todo.append(unit)
    by_key = {u["key"]: u for u in todo}
    for done, outcome in enumerate(executor.map(todo), 1):
        unit = by_key[outcome["key"]]
        store.record(unit, outcome)
        summary.ran += 1
        if outcome["status"] == "done":
            ua = outcome["result"]["ua"]
            emit.info(f"[{done}/{len(todo)}] {unit['name']} {unit['fold']}: test UA {100 * ua:.1f} "
                      f"({outcome['seconds']:.0f} s)")
        else:
            summary.failed.append({"unit": unit["name"], "fold": unit["fold"], "error": outcome["error"]})
            emit.note(f"[{done}/{len(todo)}] {unit['name']} {unit['fold']}: failed: {outcome['error']}")
        emit(Event("unit_done", data={"unit": unit, "outcome": outcome}))


def run_grid(spec: GridSpec, executor=None, on_event: OnEvent | None = None, dry_run: bool = False) -> GridSummary:
    """Run (or with ``dry_run`` list) every unit of ``spec`` not already in ``OUT/results.db``."""
    from serkd.experiments.executors import LocalExecutor

    emit = Emitter(on_event)
    out = Path(spec.out)
    grid_plan = plan(spec)
    if dry_run:
        status = ResultsStore(out / DB_NAME).status() if (out / DB_NAME).is_file() else {}
        for unit in grid_plan.units:
            emit(Event("unit_planned", data={"unit": unit, "status": status.get(unit["key"], "pending")}))
        summary = GridSummary(len(grid_plan.units))
        summary.reused = sum(status.get(u["key"]) == "done" for u in grid_plan.units)
        return summary
    out.mkdir(parents=True, exist_ok=True)
    handle = lock(out)
    try:
        atomic_write_text(out / "grid.yaml", yaml.safe_dump(spec.to_dict(), sort_keys=False))
        precompute_features(spec, emit)
        executor = executor or LocalExecutor(1)
        summary = GridSummary(len(grid_plan.units))
        with ResultsStore(out / DB_NAME) as store:
            execute(grid_plan.teacher_units, store, executor, emit, summary)
            status = store.status()
            failed_teachers = {u["key"]: next((f["error"] for f in store.failures() if f["fold"] == u["fold"]
                                               and f["name"] == "teacher"), "failed")
                               for u in grid_plan.teacher_units if status.get(u["key"]) != "done"}
            execute(grid_plan.student_units, store, executor, emit, summary, failed_teachers)
        return summary
    finally:
        handle.close()
