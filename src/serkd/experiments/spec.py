"""A declared grid (``GRID.yaml``) and its units: what ``serkd grid`` and ``serkd search`` both read.

    name: tiny
    corpus: {kind: synth, root: data/synth}
    out: runs/tiny                 # results.db and per-unit run folders
    features: [mel]                # or [mel, mfcc]
    students:                      # a registered student or timm name, or {name: ..., params: {...}}
      - lightsernet
      - {name: lightsernet, params: {pooling: stats}}
    methods:                       # name: parameters (seed defaults where omitted)
      ce: {}
      ckd: {lambda_1: 0.001, lambda_2: 0.015}
    axes: {recipe: [seed, strong]} # crossed with everything above: any student-run config field
    teacher: {model: resnet18, epochs: 10}   # or {store: DIR}, or a WavLM hub id / folder as model
    folds: all                     # or [0, 2]
    seeds: [0]
    train: {epochs: 30}            # any student-run config field, the same for every unit
    gpus_per_unit: 0.25            # four units share a GPU (local workers and Ray tasks alike)
    cpus_per_unit: 1               # torch threads per unit (Ray: CPUs reserved per task)

Every combination (features × students × axes × methods × seeds) × fold is one unit
(:class:`~serkd.experiments.units.Unit`), keyed by a hash of its resolved config, fold, seed, teacher and
data hash, and named after every dimension that varies (:func:`~serkd.experiments.units.unit_name`).

:func:`plan` checks every unit's full config before anything runs (students and their options, feature
kinds, method parameters, every config field an axis or ``train`` sets, teacher options, corpus, folds,
the crop length against each student) and reports every problem at once, one line each, naming the grid
key (``students.lightsernett: unknown model ...``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serkd.config import ConfigError, RunConfig, TeacherConfig
from serkd.errors import SerkdError
from serkd.experiments.units import Unit, UnitPlan, unit_key, unit_name
from serkd.io import read_yaml

# the grid sets these per unit: neither a `train:` block nor an axis may
GRID_SET = ("corpus", "root", "corpus_options", "out", "features", "student", "student_params", "method",
            "method_params", "seed", "folds", "teacher")
GRID_KEYS = ("name", "corpus", "out", "features", "students", "methods", "axes", "teacher", "folds", "seeds", "train",
             "gpus_per_unit", "cpus_per_unit", "ray", "search")
RAY_KEYS = ("address", "cpus_per_unit", "gpus_per_unit")  # the last two: older grids' place for them
# which grid key a RunConfig field's problem is reported under
_GRID_KEY_OF = {"corpus": "corpus", "root": "corpus", "corpus_options": "corpus", "features": "features",
                "folds": "folds"}


@dataclass(frozen=True)
class StudentEntry:
    """One entry of ``students:``: a name, or ``{name: NAME, params: {KEY: VALUE}}`` (the student's options)."""

    name: str
    params: dict = field(default_factory=dict, hash=False)

    def to_yaml(self) -> str | dict:
        return {"name": self.name, "params": dict(self.params)} if self.params else self.name

    @property
    def where(self) -> str:
        return f"students.{self.name}"


@dataclass
class GridSpec:
    name: str
    corpus: dict
    out: str
    features: list[str] = field(default_factory=lambda: ["mel"])
    students: list[StudentEntry] = field(default_factory=lambda: [StudentEntry("lightsernet")])
    methods: dict[str, dict] = field(default_factory=lambda: {"ce": {}})
    axes: dict[str, list] = field(default_factory=dict)
    teacher: dict | None = None
    folds: Any = "all"
    seeds: list[int] = field(default_factory=lambda: [0])
    train: dict = field(default_factory=dict)
    gpus_per_unit: float | None = None
    cpus_per_unit: float | None = None
    ray: dict = field(default_factory=dict)
    search: dict | None = None
    source: str | None = None  # the YAML file, for messages

    # ------------------------------------------------------------------ reading
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
        ray = data.get("ray") or {}
        if not isinstance(ray, dict) or set(ray) - set(RAY_KEYS):
            raise ConfigError("ray", f"expected {{{', '.join(RAY_KEYS)}}}", source)
        spec = cls(name=str(data["name"]), corpus=dict(corpus), out=str(data["out"]),
                   features=[str(f) for f in _as_list(data.get("features", ["mel"]))],
                   students=_students(data.get("students", ["lightsernet"]), source),
                   methods=_methods(data, source), axes=_axes(data.get("axes"), source), teacher=data.get("teacher"),
                   folds=data.get("folds", "all"), seeds=_seeds(data.get("seeds", [0]), source),
                   train=dict(data.get("train") or {}), gpus_per_unit=_resource(data, ray, "gpus_per_unit", source),
                   cpus_per_unit=_resource(data, ray, "cpus_per_unit", source),
                   ray={k: v for k, v in ray.items() if k == "address"}, search=data.get("search"), source=source)
        spec.validate()
        return spec

    def to_dict(self) -> dict:
        out = {"name": self.name, "corpus": self.corpus, "out": self.out, "features": self.features,
               "students": [s.to_yaml() for s in self.students], "methods": self.methods}
        if self.axes:
            out["axes"] = self.axes
        out.update({"teacher": self.teacher, "folds": self.folds, "seeds": self.seeds, "train": self.train})
        for key in ("gpus_per_unit", "cpus_per_unit"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.ray:
            out["ray"] = self.ray
        if self.search:
            out["search"] = self.search
        return out

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(key, problem, self.source)

    def validate(self) -> None:
        """The checks of the spec's own shape (each naming the grid key); :func:`check` does the units'."""
        bad = sorted(set(self.train) & set(GRID_SET))
        if bad:
            raise self.error(f"train.{bad[0]}", "is set by the grid itself (use the grid key)")
        fields = set(RunConfig.field_names())
        for name in self.axes:
            if name in GRID_SET:
                raise self.error(f"axes.{name}", "is set by the grid itself (use the grid key)")
            if name not in fields:
                raise self.error(f"axes.{name}", f"unknown config field (known: {', '.join(sorted(fields))})")
            if name in self.train:
                raise self.error(f"axes.{name}", "is also set in train: one place for each field")
        for key in ("features", "students", "seeds"):
            if not getattr(self, key):
                raise self.error(key, "at least one")
        if self.needs_teacher() and not self.teacher:
            needing = [m for m in self.methods if needs_teacher(m)]
            raise self.error("teacher", f"methods {', '.join(needing)} need a teacher ({{model: ...}} or "
                                        "{store: DIR})")
        if self.teacher is not None and (not isinstance(self.teacher, dict)
                                         or not (self.teacher.get("model") or self.teacher.get("store"))):
            raise self.error("teacher", "expected {model: NAME, ...} or {store: DIR}")

    # ------------------------------------------------------------------ what units are made of
    def needs_teacher(self, methods: dict[str, dict] | None = None) -> bool:
        return any(needs_teacher(m) for m in (self.methods if methods is None else methods))

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

    def threads(self) -> int:
        """Torch threads per unit unless ``train.threads`` says: ``cpus_per_unit``, else 1."""
        return max(1, int(self.cpus_per_unit or 1))

    def axis_points(self) -> list[dict]:
        """Every combination of the axes' values (``[{}]`` without axes)."""
        names = list(self.axes)
        return [dict(zip(names, values)) for values in itertools.product(*(self.axes[n] for n in names))]

    def teacher_config(self, fold: str) -> TeacherConfig:
        values = {k: v for k, v in self.teacher.items() if k != "store"}
        # the students' crop, selection rule and device carry over to a teacher that has them
        inherited = ("length", "select", "device", "skip_bad", "threads")
        inherited = tuple(k for k in inherited if k in TeacherConfig.kind_config(values.get("model", "")).field_names())
        values = {"threads": self.threads(), **{k: v for k, v in self.train.items() if k in inherited},
                  **values, **self.corpus_fields(), "out": self.teacher_store(), "folds": fold}
        try:
            config = TeacherConfig.from_dict(values)
            config.validate()
        except ConfigError as exc:
            raise self.error(f"teacher.{exc.field}", exc.problem) from None
        return config

    def student_config(self, student: StudentEntry, features: str, method: str, params: dict, seed: int, fold: str,
                       axes: dict | None = None, out: str | None = None) -> RunConfig:
        """One unit's config; a bad value raises a ConfigError naming the grid key it came from."""
        axes = axes or {}
        name = unit_name(student.name, features, method, params, seed, student.params, axes)
        values = {"threads": self.threads(), **self.train, **axes, **self.corpus_fields(), "features": features,
                  "student": student.name, "student_params": dict(student.params), "method": method,
                  "method_params": params, "seed": seed, "folds": fold,
                  "teacher": self.teacher_store() if needs_teacher(method) else None,
                  "out": out or str(Path(self.out) / "runs" / name)}
        try:
            config = RunConfig.from_dict(values)
            config.validate()
        except ConfigError as exc:
            problem = f"{exc.problem} (value {axes[exc.field]!r})" if exc.field in axes else exc.problem
            raise self.error(self._key_of(exc.field, student, method), problem) from None
        return config

    def _key_of(self, field_name: str, student: StudentEntry, method: str) -> str:
        if field_name in ("method", "method_params"):
            return f"methods.{method}"
        if field_name in ("student", "student_params", "seed_softmax") and field_name not in self.train:
            return student.where
        if field_name in self.axes:
            return f"axes.{field_name}"
        if field_name in self.train:
            return f"train.{field_name}"
        return _GRID_KEY_OF.get(field_name, field_name)


def _as_list(value) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


def _students(value, source: str | None) -> list[StudentEntry]:
    entries = []
    for i, item in enumerate(_as_list(value)):
        if isinstance(item, str) and item:
            entries.append(StudentEntry(item))
        elif isinstance(item, dict) and isinstance(item.get("name"), str) and not set(item) - {"name", "params"} \
                and isinstance(item.get("params") or {}, dict):
            entries.append(StudentEntry(item["name"], dict(item.get("params") or {})))
        else:
            raise ConfigError(f"students[{i}]", f"expected a name or {{name: NAME, params: {{KEY: VALUE}}}}, got "
                                                f"{item!r}", source)
    return entries


def _methods(data: dict, source: str | None) -> dict[str, dict]:
    if "methods" not in data:
        return {"ce": {}}  # the default: a plain CE student per configuration
    methods = data["methods"]
    if isinstance(methods, list):
        methods = {m: {} for m in methods}
    if not methods:
        raise ConfigError("methods", "empty: name at least one method, e.g. {ce: {}, kd: {temp: 4}} (serkd methods "
                                     "lists them)", source)
    if not isinstance(methods, dict) or not all(isinstance(v or {}, dict) for v in methods.values()):
        raise ConfigError("methods", "expected {method: {parameter: value}}", source)
    return {str(m): dict(p or {}) for m, p in methods.items()}


def _axes(value, source: str | None) -> dict[str, list]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError("axes", "expected {config field: [value, value, ...]}", source)
    for name, values in value.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"axes.{name}", "expected a non-empty list of values", source)
    return {str(k): list(v) for k, v in value.items()}


def _seeds(value, source: str | None) -> list[int]:
    seeds = _as_list(value)
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError("seeds", f"expected whole numbers, got {value!r}", source)
    return seeds


def _resource(data: dict, ray: dict, key: str, source: str | None) -> float | None:
    value, legacy = data.get(key), ray.get(key)
    if value is not None and legacy is not None and value != legacy:
        raise ConfigError(key, f"set twice (top level {value}, ray.{key} {legacy})", source)
    value = value if value is not None else legacy
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(key, f"expected a number >= 0, got {value!r}", source)
    return float(value)


def needs_teacher(method: str) -> bool:
    from serkd import distill

    try:
        return bool(distill.get(method).needs_teacher)
    except ValueError:
        return False  # unknown methods are reported by check_static, naming the grid key


# ---------------------------------------------------------------- checking and planning

def _problem(exc: Exception) -> str:
    if isinstance(exc, ConfigError):
        return exc.problem
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def check_static(spec: GridSpec, methods: dict[str, dict]) -> list[str]:
    """Every problem that needs no corpus: students and their options, feature kinds, method parameters, each
    unit's config fields (``train``, ``axes``, a student's options the config refuses), the teacher's options.
    One line each, without repeats."""
    from serkd import models
    from serkd.data.features import FeatureConfig
    from serkd.train.run import make_loss

    problems: list[str] = []

    def add(line: str) -> None:
        if line not in problems:
            problems.append(line)

    for student in dict.fromkeys(spec.students):
        try:
            models.create(student.name, num_classes=2, **student.params)
        except (SerkdError, TypeError, ValueError) as exc:
            add(str(spec.error(student.where, _problem(exc))))
    for kind in dict.fromkeys(spec.features):
        try:
            FeatureConfig(kind, 16000)
        except SerkdError as exc:
            add(str(spec.error(f"features.{kind}", _problem(exc))))
    for method, params in methods.items():
        try:
            make_loss(method, params)
        except SerkdError as exc:
            add(str(spec.error(f"methods.{method}", _problem(exc))))
    for student, point, (method, params) in itertools.product(spec.students, spec.axis_points(), methods.items()):
        try:
            spec.student_config(student, spec.features[0], method, params, spec.seeds[0], "0", point)
        except ConfigError as exc:
            add(str(exc))
    if spec.teacher and spec.teacher.get("model") and spec.needs_teacher(methods):
        from serkd.train.events import Emitter
        from serkd.train.teachers import kind_for

        try:
            teacher = spec.teacher_config("0")
        except ConfigError as exc:
            add(str(exc))
        else:
            try:
                kind_for(teacher.model)(teacher, Emitter())  # the kind's checks that need no data (model found...)
            except ConfigError as exc:  # the kind names its own fields; a CNN teacher's model is its "student"
                field = "model" if exc.field in ("student", "model") else exc.field
                add(str(spec.error(f"teacher.{field}", exc.problem)))
            except (SerkdError, TypeError, ValueError) as exc:
                add(str(spec.error("teacher.model", _problem(exc))))
    return problems


def check_data(spec: GridSpec) -> tuple[list[str], list[str], str]:
    """The corpus, its folds and each student's input size against the crop: ``(problems, fold names, data
    hash)``. Reads the corpus once, through the student driver's own plan."""
    from serkd.data.features import FeatureConfig
    from serkd.train import run as training

    probe = spec.student_config(spec.students[0], spec.features[0], "ce", {}, spec.seeds[0], "0",
                                spec.axis_points()[0])
    probe = probe.replace(folds=spec.folds_spec(), out=str(Path(spec.out) / ".probe-never-written"))
    try:
        checked = training.plan(probe)
    except ConfigError as exc:
        return [str(spec.error(spec._key_of(exc.field, spec.students[0], "ce"), exc.problem))], [], ""
    except SerkdError as exc:
        return [str(spec.error("corpus", _problem(exc)))], [], ""
    problems: list[str] = []
    num_classes = len(checked.manifest.labels)
    lengths = dict.fromkeys(p.get("length", spec.train.get("length")) for p in spec.axis_points())
    for student, features, length in itertools.product(dict.fromkeys(spec.students), spec.features, lengths):
        feature_config = FeatureConfig(features, probe.replace(length=length).crop_length)
        try:
            training.check_input_size(student.name, dict(student.params), feature_config, num_classes)
        except ConfigError as exc:
            line = str(spec.error(student.where, f"with {features}: {exc.problem}"))
            if line not in problems:
                problems.append(line)
    return problems, [f.name for f in checked.folds], checked.data_hash


def plan(spec: GridSpec, methods: dict[str, dict] | None = None, kind: str = "student",
         out_root: str | None = None) -> UnitPlan:
    """Every unit of the grid (or of ``methods`` only: a search trial), with keys, after checking them all;
    raises one SerkdError listing every problem (one line each) before anything runs."""
    methods = spec.methods if methods is None else methods
    problems = check_static(spec, methods)
    data_problems, folds, data_hash = check_data(spec) if not problems else ([], [], "")
    problems += data_problems
    if problems:
        raise SerkdError("\n".join(problems))
    units = UnitPlan(folds, data_hash)
    teacher_keys: dict[str, str] = {}
    if spec.teacher and spec.teacher.get("model") and spec.needs_teacher(methods):
        for fold in folds:
            config = spec.teacher_config(fold).to_dict()
            key = unit_key(config, fold, data_hash, None, "teacher")
            teacher_keys[fold] = key
            units.teacher_units.append(Unit(key, "teacher", "teacher", fold, config, data_hash))
    for features, student, point, (method, params), seed in itertools.product(
            spec.features, spec.students, spec.axis_points(), methods.items(), spec.seeds):
        name = unit_name(student.name, features, method, params, seed, student.params, point)
        out = str(Path(out_root) / name) if out_root else None
        for fold in folds:
            config = spec.student_config(student, features, method, params, seed, fold, point, out).to_dict()
            teacher_key = teacher_keys.get(fold) if config["teacher"] else None
            identity = f"store:{spec.teacher['store']}" if config["teacher"] and spec.teacher.get("store") \
                else teacher_key
            units.student_units.append(Unit(unit_key(config, fold, data_hash, identity, kind), kind, name, fold,
                                            config, data_hash, teacher_key))
    return units
