"""Experiment configs: one typed object per run, built alike from the CLI, a YAML file or Python.

    config = RunConfig(corpus="synth", root="data/synth", method="ckd", teacher="teachers/cnn", out="runs/ckd")
    config = RunConfig.from_yaml("run.yaml")          # unknown keys: one line naming the key and the file
    config.validate()                                 # messages name fields: "batch_size: must be at least 1"
    teacher = TeacherConfig(model="egemaps", corpus="synth", root="data/synth", out="teachers/egemaps")

The classes, each field (its default, help, choices, whether it changes results) written once:

- :class:`Config`: what every run has (the corpus, the protocol, the seed, where it goes);
- :class:`TrainingConfig`: a network trained epoch by epoch on a device (the seed's optimiser defaults);
- :class:`SpectrogramConfig`: a registered student or timm model on mel/MFCC features;
- :class:`RunConfig`: a student run (KD method, teacher store, training recipe);
- :class:`TeacherConfig`: a teacher run; each teacher kind owns its subclass in its own file
  (``serkd/train/teachers/<kind>.py``). ``TeacherConfig(model=..., ...)`` and ``TeacherConfig.from_dict``
  build the config of the kind ``model`` names (as ``pathlib.Path`` builds a ``PosixPath``), and refuse a
  field of another kind in one line naming it.

The library never knows about flags: the CLI builds them from these fields (``cli/config_args.py``:
flag names and argparse actions live there) and maps field names back to flags in its messages. Each
run folder keeps its resolved config as ``config.yaml``: ``serkd train --config RUN_DIR/config.yaml``
repeats the run.

Fields marked ``hashed=False`` (where the data lies, the device, threads, which folds this call
trains, TensorBoard) change no result: they stay out of the config hash that decides whether a
fold's finished result can be reused.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import yaml

from serkd.errors import SerkdError
from serkd.hashing import stable_hash

SELECT_CHOICES = ("valid", "test")
SCHEDULE_CHOICES = ("step", "cosine")
# The seed's training (Adam, StepLR stepped per batch): the defaults of every network trained here from
# scratch, students and CNN teachers alike (train/loop.py's FitConfig reads them too)
SEED_TRAINING: dict[str, Any] = {"epochs": 100, "batch_size": 16, "lr": 1e-3, "weight_decay": 1e-4,
                                 "step_size": 300, "gamma": 0.9}
# Student training recipes: ``seed`` is the paper's (every option off, bit-identical to serkd before recipes
# existed); ``strong`` turns on what lifted students on speech (benchmarks/bench_recipe.py). A field the user
# sets explicitly wins over the preset: the recipe fields default to None, "the recipe's value".
RECIPES: dict[str, dict[str, Any]] = {
    "seed": {"time_shift": 0.0, "freq_masks": 0, "freq_mask_width": 0.0, "time_masks": 0, "time_mask_width": 0.0,
             "mixup": 0.0, "balanced_sampling": False, "schedule": "step", "warmup_epochs": 0.0, "patience": 0},
    "strong": {"time_shift": 1.0, "freq_masks": 2, "freq_mask_width": 0.15, "time_masks": 2, "time_mask_width": 0.1,
               "mixup": 0.0, "balanced_sampling": True, "schedule": "cosine", "warmup_epochs": 2.0, "patience": 0},
}


class ConfigError(SerkdError):
    """A config value that cannot be used: ``field`` names it, the message says why."""

    def __init__(self, field_name: str, problem: str, source: str | None = None):
        self.field = field_name
        self.problem = problem
        self.source = source
        super().__init__(f"{source + ': ' if source else ''}{field_name}: {problem}")


def meta(help: str, *, hashed: bool | str = True, choices=None) -> dict:
    """A field's metadata: its help, whether it changes results, its choices (a callable: read late).

    ``hashed="unless-default"``: a field added after runs existed enters the hash only when set, so the
    folds of older runs keep their keys (and are reused, not retrained)."""
    return {"help": help, "hashed": hashed, "choices": choices}


def with_default(cls, name: str, default: Any):
    """``cls``'s field ``name`` (its help and choices) with another default, for a subclass that trains
    with other defaults (a WavLM teacher fine-tunes for 20 epochs, not 100)."""
    base = next(f for f in fields(cls) if f.name == name)
    return field(default=default, metadata=base.metadata)


def _corpora() -> list[str]:
    from serkd.data.corpora import available

    return available()


def _feature_kinds() -> list[str]:
    from serkd.data.features import PRESETS

    return list(PRESETS)


def _normalize_choices() -> list[str]:
    from serkd.data.statistics import NORMALIZE_CHOICES

    return list(NORMALIZE_CHOICES)


def _methods() -> list[str]:
    from serkd import distill

    return distill.available()


@dataclass(kw_only=True)
class Config:
    """Fields every run has (students and every teacher kind): the corpus, the protocol, where it goes."""

    corpus: str = field(default="", metadata=meta("corpus kind", choices=_corpora))
    root: str = field(default="", metadata=meta("corpus folder (csv: the CSV file)", hashed=False))
    corpus_options: dict = field(default_factory=dict, metadata=meta(
        "corpus options (csv: labels, speakers_per_fold), KEY=VALUE"))
    out: str = field(default="", metadata=meta("run folder", hashed=False))
    seed: int = field(default=0, metadata=meta("random seed (fixes results on CPU)"))
    folds: str | None = field(default=None, metadata=meta(
        "comma list of fold indices or names (default: all)", hashed=False))
    select: str = field(default="valid", metadata=meta(
        "choose the best epoch on validation speakers, or as the seed did on the test fold (results marked "
        "test-selected)", choices=lambda: list(SELECT_CHOICES)))
    threads: int | None = field(default=None, metadata=meta(
        "torch CPU threads (default: one per physical core this process may use, OMP_NUM_THREADS caps it; a note "
        "when the machine's load oversubscribes the run)", hashed=False))
    skip_bad: bool = field(default=False, metadata=meta("drop bad audio files instead of failing", hashed=False))

    # ------------------------------------------------------------------ building
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str | None = None):
        """A config from plain values (YAML, JSON, flags); unknown keys and wrong types name the field."""
        if not isinstance(values, dict):
            raise SerkdError(f"{source or 'config'}: expected a mapping of field: value")
        known = set(cls.field_names())
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown field (known: {', '.join(sorted(known))})", source)
        hints = typing.get_type_hints(cls)
        coerced = {name: _coerce(name, value, hints[name], source) for name, value in values.items()}
        return cls(**coerced)

    @classmethod
    def from_yaml(cls, path: str | Path):
        from serkd.io import read_yaml

        path = Path(path)
        values = read_yaml(path, "config")
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def resolved(self):
        """The values this config runs with where a field left at None means "derived" (see subclasses)."""
        return self

    def derived_values(self) -> dict[str, Any]:
        """Fields left at None that stand for a value derived at run time (``length``: the corpus' seed
        length), with that value: what ``--print-config`` shows beside them."""
        return {}

    def hashed_dict(self) -> dict[str, Any]:
        """The fields that change results (see the module docstring)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("hashed", True) is True
                or (f.metadata.get("hashed") == "unless-default" and getattr(self, f.name) != _default(type(self),
                                                                                                      f.name))}

    def config_hash(self) -> str:
        return stable_hash(self.hashed_dict())

    # ------------------------------------------------------------------ checking
    def validate(self) -> None:
        """Every check that needs no data: one ConfigError naming the first bad field."""
        if not self.corpus:
            raise ConfigError("corpus", "required")
        if self.corpus not in _corpora():
            raise ConfigError("corpus", f"unknown corpus kind {self.corpus!r} (available: {', '.join(_corpora())})")
        if not self.root:
            raise ConfigError("root", "required")
        if not self.out:
            raise ConfigError("out", "required (the run folder)")
        if self.select not in SELECT_CHOICES:
            raise ConfigError("select", f"must be one of {', '.join(SELECT_CHOICES)}, not {self.select!r}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("threads", "must be at least 1")


@dataclass(kw_only=True)
class TrainingConfig(Config):
    """A network trained epoch by epoch on a device; the defaults are the seed's (:data:`SEED_TRAINING`)."""

    length: int | None = field(default=None, metadata=meta(
        "crop/pad length in samples (default: the corpus' seed value)"))
    epochs: int = field(default=SEED_TRAINING["epochs"], metadata=meta("training epochs"))
    batch_size: int = field(default=SEED_TRAINING["batch_size"], metadata=meta("batch size"))
    lr: float = field(default=SEED_TRAINING["lr"], metadata=meta("learning rate"))
    weight_decay: float = field(default=SEED_TRAINING["weight_decay"], metadata=meta("weight decay"))
    device: str = field(default="auto", metadata=meta("auto, cpu, cuda, cuda:1, ...", hashed=False))
    tensorboard: bool = field(default=False, metadata=meta(
        "write per-epoch curves to RUN_DIR/tensorboard", hashed=False))

    def validate(self) -> None:
        super().validate()
        if self.epochs < 1:
            raise ConfigError("epochs", "must be at least 1")
        if self.batch_size < 1:
            raise ConfigError("batch_size", "must be at least 1")
        if not self.lr > 0:
            raise ConfigError("lr", "must be positive")
        if self.weight_decay < 0:
            raise ConfigError("weight_decay", "must be non-negative")
        if self.length is not None and self.length < 1:
            raise ConfigError("length", "must be a positive number of samples")
        if self.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ConfigError("device", f"{self.device}: no CUDA device is available here (use cpu or auto)")
        elif self.device not in ("auto", "cpu") and not self.device.startswith(("mps", "xpu")):
            raise ConfigError("device", f"unknown device {self.device!r} (auto, cpu, cuda, cuda:1, ...)")

    @property
    def crop_length(self) -> int:
        from serkd.data.features import DEFAULT_LENGTH

        return self.length or DEFAULT_LENGTH.get(self.corpus, 80000)

    def derived_values(self) -> dict[str, Any]:
        # length stays None in the config (its hash is what older runs were keyed by); the value it stands for
        return {**super().derived_values(), **({"length": self.crop_length} if self.length is None else {})}


@dataclass(kw_only=True)
class SpectrogramConfig(TrainingConfig):
    """A registered student or timm model trained on mel/MFCC features (students, CNN teachers)."""

    features: str = field(default="mel", metadata=meta("input features", choices=_feature_kinds))
    student_params: dict = field(default_factory=dict, metadata=meta(
        "model option, KEY=VALUE, repeatable (serkd students lists them)"))
    normalize: str | None = field(default=None, metadata=meta(
        "feature normalisation per bin over real frames: utterance (mel/mfcc already standardise each waveform), "
        "speaker (each speaker's own statistics, the test speaker's from its unlabelled audio: results marked "
        "speaker-normalised), corpus (the fold's training speakers'), none; default: the feature kind's (mel, mfcc: "
        "utterance; logmel: corpus)", hashed="unless-default", choices=_normalize_choices))

    def derived_values(self) -> dict[str, Any]:
        from serkd.data.normalize import resolve

        resolved = {"normalize": resolve(None, self.features)} if self.normalize is None else {}
        return {**super().derived_values(), **resolved}

    def validate(self) -> None:
        super().validate()
        if self.normalize is not None and self.normalize not in _normalize_choices():
            raise ConfigError("normalize", f"must be one of {', '.join(_normalize_choices())}, not {self.normalize!r}")


@dataclass(kw_only=True)
class RunConfig(SpectrogramConfig):
    """A student run: one student per fold, trained with a KD method (``ce``: no teacher)."""

    student: str = field(default="lightsernet", metadata=meta("lightsernet or any timm model name"))
    method: str = field(default="ce", metadata=meta("KD method (serkd methods lists them)", choices=_methods))
    method_params: dict = field(default_factory=dict, metadata=meta("KD method parameter, KEY=VALUE, repeatable"))
    step_size: int = field(default=SEED_TRAINING["step_size"], metadata=meta(
        "StepLR step, in batches (the seed steps per batch)"))
    gamma: float = field(default=SEED_TRAINING["gamma"], metadata=meta("StepLR decay factor"))
    teacher: str | None = field(default=None, metadata=meta(
        "teacher outputs store (serkd teacher train/import-seed)"))
    allow_leaky_teacher: bool = field(default=False, metadata=meta(
        "distil from a teacher that saw the fold's test speakers (results marked leaky-teacher)"))
    allow_stale_teacher: bool = field(default=False, metadata=meta(
        "distil from teacher outputs computed on other audio than the corpus' (results marked stale-teacher)"))
    seed_softmax: bool = field(default=False, metadata=meta(
        "Light-SERNet+ ends in a softmax as in the seed (losses then see probabilities); same as "
        "student_params seed_softmax=true"))
    feature_dtype: str = field(default="float32", metadata=meta(
        "storage of the memory-mapped feature store (float16 halves its size; rows are float32 in training)",
        hashed="unless-default", choices=lambda: ["float32", "float16"]))
    final: bool = field(default=False, metadata=meta(
        "after the folds, train one model on every speaker for the median best epoch over the folds "
        "(RUN_DIR/final)", hashed=False))
    # the training recipe: None = the recipe's value (RECIPES); see train/augment.py and train/loop.py
    recipe: str = field(default="seed", metadata=meta(
        "training recipe: seed (the paper's, every option below off) or strong (time shift, SpecAugment, "
        "class-balanced sampling, cosine schedule with warm-up); options given explicitly win over it",
        choices=lambda: list(RECIPES)))
    time_shift: float | None = field(default=None, metadata=meta(
        "training only: roll each example's features in time by a random amount up to this fraction of the "
        "frames (1: any shift); a random crop that reuses the cached centre crop; evaluation is unshifted"))
    freq_masks: int | None = field(default=None, metadata=meta(
        "training only: SpecAugment frequency masks per example (robustness to spectral colouring)"))
    freq_mask_width: float | None = field(default=None, metadata=meta(
        "largest frequency mask, as a fraction of the feature bins"))
    time_masks: int | None = field(default=None, metadata=meta(
        "training only: SpecAugment time masks per example (emotion must be read from the whole utterance)"))
    time_mask_width: float | None = field(default=None, metadata=meta(
        "largest time mask, as a fraction of the frames"))
    mixup: float | None = field(default=None, metadata=meta(
        "mixup Beta(a, a) parameter, 0 off: inputs, labels (lam CE(y_a) + (1-lam) CE(y_b)) and the teacher's "
        "probabilities are mixed alike"))
    balanced_sampling: bool | None = field(default=None, metadata=meta(
        "draw training examples with probability 1/class size (with replacement), so every class is seen "
        "equally often: UA weighs classes equally"))
    schedule: str | None = field(default=None, metadata=meta(
        "learning-rate schedule: step (the seed's StepLR, step_size/gamma) or cosine (to zero over the run, "
        "after a linear warm-up)", choices=lambda: list(SCHEDULE_CHOICES)))
    warmup_epochs: float | None = field(default=None, metadata=meta(
        "cosine: epochs of linear warm-up from zero (stabilises Adam's first steps and BatchNorm statistics)"))
    patience: int | None = field(default=None, metadata=meta(
        "stop after this many epochs without a better validation UA, 0 never; the best epoch is kept"))

    RECIPE_FIELDS: ClassVar[tuple[str, ...]] = tuple(RECIPES["seed"])

    def resolved(self) -> RunConfig:
        """The recipe's values filled in for the recipe fields left at None (explicit values win)."""
        if self.recipe not in RECIPES:
            raise ConfigError("recipe", f"must be one of {', '.join(RECIPES)}, not {self.recipe!r}")
        preset = dict(RECIPES[self.recipe])
        # a preset's warm-up never takes more than a fifth of a short run (an explicit one is checked instead)
        preset["warmup_epochs"] = min(preset["warmup_epochs"], self.epochs / 5)
        return self.replace(**{k: v for k, v in preset.items() if getattr(self, k) is None})

    def hashed_dict(self) -> dict[str, Any]:
        """Recipe fields at the seed's values stay out, so results of runs made before recipes existed
        (and every seed-recipe run) keep their hash and are reused."""
        values = super().hashed_dict()
        if values.get("recipe") == "seed":
            del values["recipe"]
        seed = RECIPES["seed"]
        return {k: v for k, v in values.items() if not (k in seed and (v is None or v == seed[k]))}

    def validate(self) -> None:
        super().validate()
        config = self.resolved()
        for name in ("time_shift", "freq_masks", "time_masks", "mixup", "warmup_epochs", "patience"):
            if getattr(config, name) < 0:
                raise ConfigError(name, "must be non-negative (0: off)")
        for name in ("freq_mask_width", "time_mask_width"):
            if not 0 <= getattr(config, name) <= 1:
                raise ConfigError(name, "is a fraction of the features, in [0, 1]")
        if config.schedule not in SCHEDULE_CHOICES:
            raise ConfigError("schedule", f"must be one of {', '.join(SCHEDULE_CHOICES)}, not {config.schedule!r}")
        if config.warmup_epochs and config.schedule != "cosine":
            raise ConfigError("warmup_epochs", "applies to the cosine schedule only")
        if config.warmup_epochs >= self.epochs:
            raise ConfigError("warmup_epochs", f"must be shorter than the run ({self.epochs} epochs)")
        if self.step_size < 1:
            raise ConfigError("step_size", "must be at least 1")
        if not 0 < self.gamma <= 1:
            raise ConfigError("gamma", "must be in (0, 1]")
        if self.feature_dtype not in ("float32", "float16"):
            raise ConfigError("feature_dtype", f"must be float32 or float16, not {self.feature_dtype!r}")
        if self.seed_softmax and self.student != "lightsernet":
            raise ConfigError("seed_softmax", f"applies to lightsernet only, not {self.student!r}")

    def model_options(self) -> dict:
        """The student's constructor options: ``student_params`` (+ the seed's softmax head when asked)."""
        return {**self.student_params, **({"seed_softmax": True} if self.seed_softmax else {})}


@dataclass(kw_only=True)
class TeacherConfig(Config):
    """A teacher run: a model fitted per fold whose outputs for every utterance go to a store.

    The shared base of the teacher kinds' configs (each kind's file in ``serkd/train/teachers/`` owns its
    subclass). Built from this class, ``TeacherConfig(model=..., ...)`` and :meth:`from_dict` return the
    config of the kind ``model`` names: a registered student or timm name is a CNN trained from scratch,
    a WavLM hub id or folder is fine-tuned, ``egemaps`` is openSMILE functionals + logistic regression.
    A field another kind has but this one does not is refused in one line naming it.
    """

    model: str = field(default="", metadata=meta(
        "a registered model or timm name (e.g. resnet18), a WavLM checkpoint to fine-tune: a hub id "
        "(microsoft/wavlm-base-plus) or a local folder with config.json, or egemaps (openSMILE eGeMAPSv02 "
        "functionals + logistic regression: no GPU)"))

    teacher_kind: ClassVar[str] = ""  # the registered kind (set by serkd.train.teachers.register)

    def __new__(cls, *args, **values):
        if cls is TeacherConfig:
            cls = cls.kind_config(values.get("model", ""), values)
        return super().__new__(cls)

    @classmethod
    def kind_config(cls, model: str, values: dict | None = None) -> type[TeacherConfig]:
        """The config class of the kind ``model`` names; a field in ``values`` that only other kinds have
        is a ConfigError naming it."""
        from serkd.train.teachers import config_class  # the kinds' registry: each kind's file owns its class

        return config_class(model, values or {})

    @classmethod
    def kind_configs(cls) -> dict[str, type[TeacherConfig]]:
        """Every registered teacher kind's config class, by kind name."""
        from serkd.train.teachers import kinds

        return {kind.name: kind.Config for kind in kinds()}

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str | None = None):
        if cls is TeacherConfig and isinstance(values, dict):
            try:
                kind = cls.kind_config(values.get("model") or "", values)
            except ConfigError as exc:
                raise ConfigError(exc.field, exc.problem, source) from None
            return kind.from_dict(values, source)
        return super().from_dict(values, source)

    def validate(self) -> None:
        if not self.model:
            raise ConfigError("model", "required")
        super().validate()


def _default(cls, name: str):
    f = next(f for f in fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def defaults(cls) -> dict[str, Any]:
    return {f.name: _default(cls, f.name) for f in fields(cls)}


def _coerce(name: str, value: Any, hint, source: str | None) -> Any:
    """YAML and flag values to the field's type, refusing what would silently mean something else."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if value is None:
        if optional:
            return None
        raise ConfigError(name, "must not be empty", source)
    if name == "folds":
        return _folds_spec(value, source)
    if base is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(name, f"expected true or false, got {value!r}", source)
    if base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(name, f"expected a whole number, got {value!r}", source)
    if base is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(name, f"expected a number, got {value!r}", source)
    if base is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(name, f"expected text, got {value!r}", source)
    if base is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(name, f"expected a mapping of key: value, got {value!r}", source)
    return value


def _folds_spec(value: Any, source: str | None) -> str | None:
    """``all``, ``[0, 2]``, ``0,2`` or ``spk03`` -> the comma string ``pick_folds`` reads (None: all)."""
    if isinstance(value, str):
        return None if value.strip().lower() in ("", "all") else value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, int | str) and not isinstance(v, bool) for v in value):
        return ",".join(str(v) for v in value) or None
    raise ConfigError("folds", f"expected all, a list of fold indices/names or '0,2', got {value!r}", source)
