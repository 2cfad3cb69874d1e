"""Experiment configs: one typed object per run, built alike from the CLI, a YAML file or Python.

    config = RunConfig(corpus="synth", root="data/synth", method="ckd", teacher="teachers/cnn", out="runs/ckd")
    config = RunConfig.from_yaml("run.yaml")          # unknown keys: one line naming the key and the file
    config.validate()                                 # messages name fields: "batch_size: must be at least 1"

Every default is written here once. The CLI builds its flags from these fields (``--batch-size`` for
``batch_size``; help text and defaults from the field metadata) and maps field names back to flag
names in its messages; the library never knows about flags. Each run folder keeps its resolved config
as ``config.yaml``: ``serkd train --config RUN_DIR/config.yaml`` repeats the run.

Fields marked ``hashed=False`` (where the data lies, the device, threads, which folds this call
trains, TensorBoard) change no result: they stay out of the config hash that decides whether a
fold's finished result can be reused.
"""

from __future__ import annotations

import argparse
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
# Student training recipes: ``seed`` is the paper's (every option off, bit-identical to serkd before recipes
# existed); ``strong`` turns on what lifted students on speech (benchmarks/bench_recipe.py). A field the user
# sets explicitly wins over the preset: the recipe fields default to None, "the recipe's value".
RECIPES: dict[str, dict[str, Any]] = {
    "seed": {"time_shift": 0.0, "freq_masks": 0, "freq_mask_width": 0.0, "time_masks": 0, "time_mask_width": 0.0,
             "mixup": 0.0, "balanced_sampling": False, "schedule": "step", "warmup_epochs": 0.0, "patience": 0},
    "strong": {"time_shift": 1.0, "freq_masks": 2, "freq_mask_width": 0.15, "time_masks": 2, "time_mask_width": 0.1,
               "mixup": 0.0, "balanced_sampling": True, "schedule": "cosine", "warmup_epochs": 2.0, "patience": 0},
}
# serkd train's defaults (the seed's) suit a CNN trained from scratch; fine-tuning a transformer wants these
WAVLM_DEFAULTS = {"epochs": 20, "batch_size": 8, "lr": 5e-5, "weight_decay": 1e-2}
EGEMAPS_MODEL = "egemaps"  # TeacherConfig.model of the classical baseline teacher (train/teacher_egemaps.py)


class ConfigError(SerkdError):
    """A config value that cannot be used: ``field`` names it, the message says why."""

    def __init__(self, field_name: str, problem: str, source: str | None = None):
        self.field = field_name
        self.problem = problem
        self.source = source
        super().__init__(f"{source + ': ' if source else ''}{field_name}: {problem}")


def _meta(help: str, *, hashed: bool | str = True, choices=None, flag: str | None = None, metavar: str | None = None,
          action: str | None = None) -> dict:
    """Field metadata the CLI reads: help, whether it changes results, choices (a callable: read late).

    ``hashed="unless-default"``: a field added after runs existed enters the hash only when set, so the
    folds of older runs keep their keys (and are reused, not retrained)."""
    return {"help": help, "hashed": hashed, "choices": choices, "flag": flag, "metavar": metavar, "action": action}


def _corpora() -> list[str]:
    from serkd.data.corpora import available

    return available()


def _feature_kinds() -> list[str]:
    from serkd.data.features import PRESETS

    return list(PRESETS)


def _methods() -> list[str]:
    from serkd import distill

    return distill.available()


@dataclass(kw_only=True)
class _Config:
    """Fields shared by student and teacher runs: the corpus, the protocol, the optimiser, where it goes."""

    corpus: str = field(default="", metadata=_meta("corpus kind", choices=_corpora))
    root: str = field(default="", metadata=_meta("corpus folder (csv: the CSV file)", hashed=False))
    corpus_options: dict = field(default_factory=dict, metadata=_meta(
        "corpus options (csv: labels, speakers_per_fold), KEY=VALUE", flag="--corpus-option", metavar="KEY=VALUE"))
    out: str = field(default="", metadata=_meta("run folder", hashed=False))
    features: str = field(default="mel", metadata=_meta("input features", choices=_feature_kinds))
    length: int | None = field(default=None, metadata=_meta(
        "crop/pad length in samples (default: the corpus' seed value)"))
    epochs: int = field(default=100, metadata=_meta("training epochs"))
    batch_size: int = field(default=16, metadata=_meta("batch size"))
    lr: float = field(default=1e-3, metadata=_meta("learning rate"))
    weight_decay: float = field(default=1e-4, metadata=_meta("weight decay"))
    seed: int = field(default=0, metadata=_meta("random seed (fixes results on CPU)"))
    folds: str | None = field(default=None, metadata=_meta(
        "comma list of fold indices or names (default: all)", hashed=False))
    select: str = field(default="valid", metadata=_meta(
        "choose the best epoch on validation speakers, or as the seed did on the test fold (results marked "
        "test-selected)", choices=lambda: list(SELECT_CHOICES)))
    device: str = field(default="auto", metadata=_meta("auto, cpu, cuda, cuda:1, ...", hashed=False))
    threads: int | None = field(default=None, metadata=_meta(
        "torch CPU threads (default: one per physical core this process may use, OMP_NUM_THREADS caps it; a note "
        "when the machine's load oversubscribes the run)", hashed=False))
    skip_bad: bool = field(default=False, metadata=_meta("drop bad audio files instead of failing", hashed=False))
    tensorboard: bool = field(default=False, metadata=_meta(
        "write per-epoch curves to RUN_DIR/tensorboard", hashed=False))

    kind: ClassVar[str] = "run"

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
        if self.epochs < 1:
            raise ConfigError("epochs", "must be at least 1")
        if self.batch_size < 1:
            raise ConfigError("batch_size", "must be at least 1")
        if not self.lr > 0:
            raise ConfigError("lr", "must be positive")
        if self.weight_decay < 0:
            raise ConfigError("weight_decay", "must be non-negative")
        if self.select not in SELECT_CHOICES:
            raise ConfigError("select", f"must be one of {', '.join(SELECT_CHOICES)}, not {self.select!r}")
        if self.length is not None and self.length < 1:
            raise ConfigError("length", "must be a positive number of samples")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("threads", "must be at least 1")
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


@dataclass(kw_only=True)
class RunConfig(_Config):
    """A student run: one student per fold, trained with a KD method (``ce``: no teacher)."""

    student: str = field(default="lightsernet", metadata=_meta("lightsernet or any timm model name"))
    student_params: dict = field(default_factory=dict, metadata=_meta(
        "student option, KEY=VALUE, repeatable (serkd students lists them)", flag="--student-param",
        metavar="KEY=VALUE"))
    method: str = field(default="ce", metadata=_meta("KD method (serkd methods lists them)", choices=_methods))
    method_params: dict = field(default_factory=dict, metadata=_meta(
        "KD method parameter, KEY=VALUE, repeatable", flag="--method-param", metavar="KEY=VALUE"))
    step_size: int = field(default=300, metadata=_meta("StepLR step, in batches (the seed steps per batch)"))
    gamma: float = field(default=0.9, metadata=_meta("StepLR decay factor"))
    teacher: str | None = field(default=None, metadata=_meta(
        "teacher outputs store (serkd teacher train/import-seed)"))
    allow_leaky_teacher: bool = field(default=False, metadata=_meta(
        "distil from a teacher that saw the fold's test speakers (results marked leaky-teacher)"))
    allow_stale_teacher: bool = field(default=False, metadata=_meta(
        "distil from teacher outputs computed on other audio than the corpus' (results marked stale-teacher)"))
    seed_softmax: bool = field(default=False, metadata=_meta(
        "Light-SERNet+ ends in a softmax as in the seed (losses then see probabilities); same as "
        "student_params seed_softmax=true"))
    feature_dtype: str = field(default="float32", metadata=_meta(
        "storage of the memory-mapped feature store (float16 halves its size; rows are float32 in training)",
        hashed="unless-default", choices=lambda: ["float32", "float16"]))
    final: bool = field(default=False, metadata=_meta(
        "after the folds, train one model on every speaker for the median best epoch over the folds "
        "(RUN_DIR/final)", hashed=False))
    # the training recipe: None = the recipe's value (RECIPES); see train/augment.py and train/loop.py
    recipe: str = field(default="seed", metadata=_meta(
        "training recipe: seed (the paper's, every option below off) or strong (time shift, SpecAugment, "
        "class-balanced sampling, cosine schedule with warm-up); options given explicitly win over it",
        choices=lambda: list(RECIPES)))
    time_shift: float | None = field(default=None, metadata=_meta(
        "training only: roll each example's features in time by a random amount up to this fraction of the "
        "frames (1: any shift); a random crop that reuses the cached centre crop; evaluation is unshifted"))
    freq_masks: int | None = field(default=None, metadata=_meta(
        "training only: SpecAugment frequency masks per example (robustness to spectral colouring)"))
    freq_mask_width: float | None = field(default=None, metadata=_meta(
        "largest frequency mask, as a fraction of the feature bins"))
    time_masks: int | None = field(default=None, metadata=_meta(
        "training only: SpecAugment time masks per example (emotion must be read from the whole utterance)"))
    time_mask_width: float | None = field(default=None, metadata=_meta(
        "largest time mask, as a fraction of the frames"))
    mixup: float | None = field(default=None, metadata=_meta(
        "mixup Beta(a, a) parameter, 0 off: inputs, labels (lam CE(y_a) + (1-lam) CE(y_b)) and the teacher's "
        "probabilities are mixed alike"))
    balanced_sampling: bool | None = field(default=None, metadata=_meta(
        "draw training examples with probability 1/class size (with replacement), so every class is seen "
        "equally often: UA weighs classes equally", action=argparse.BooleanOptionalAction))
    schedule: str | None = field(default=None, metadata=_meta(
        "learning-rate schedule: step (the seed's StepLR, step_size/gamma) or cosine (to zero over the run, "
        "after a linear warm-up)", choices=lambda: list(SCHEDULE_CHOICES)))
    warmup_epochs: float | None = field(default=None, metadata=_meta(
        "cosine: epochs of linear warm-up from zero (stabilises Adam's first steps and BatchNorm statistics)"))
    patience: int | None = field(default=None, metadata=_meta(
        "stop after this many epochs without a better validation UA, 0 never; the best epoch is kept"))

    kind: ClassVar[str] = "student"
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
class TeacherConfig(_Config):
    """A teacher run: a model trained per fold whose outputs for every utterance go to a store.

    ``model`` is a registered student or timm name (a CNN trained from scratch on ``features``), or a
    WavLM checkpoint to fine-tune on waveforms (a hub id such as microsoft/wavlm-base-plus or a local
    folder with config.json). ``epochs``, ``batch_size``, ``lr`` and ``weight_decay`` left at None take
    the defaults of that kind (:meth:`resolved`).
    """

    model: str = field(default="", metadata=_meta(
        "a registered model or timm name (e.g. resnet18), a WavLM checkpoint to fine-tune: a hub id "
        "(microsoft/wavlm-base-plus) or a local folder with config.json, or egemaps (openSMILE eGeMAPSv02 "
        "functionals + logistic regression: no GPU)"))
    epochs: int | None = field(default=None, metadata=_meta("training epochs (default: 100 CNN, 20 WavLM)"))
    batch_size: int | None = field(default=None, metadata=_meta("batch size (default: 16 CNN, 8 WavLM)"))
    lr: float | None = field(default=None, metadata=_meta(
        "learning rate (default: 1e-3 CNN; 5e-5 WavLM, the transformer)"))
    weight_decay: float | None = field(default=None, metadata=_meta("weight decay (default: 1e-4 CNN, 1e-2 WavLM)"))
    student_params: dict = field(default_factory=dict, metadata=_meta(
        "CNN teachers: model option, KEY=VALUE, repeatable", flag="--student-param", metavar="KEY=VALUE"))
    # WavLM teachers only
    revision: str | None = field(default=None, metadata=_meta("WavLM: hub revision (branch, tag or commit)"))
    head_lr: float = field(default=5e-4, metadata=_meta("WavLM: learning rate of the new head"))
    warmup: float = field(default=0.1, metadata=_meta("WavLM: linear warm-up, fraction of the optimiser steps"))
    grad_accum: int = field(default=1, metadata=_meta("WavLM: batches per optimiser step"))
    freeze_feature_encoder: bool = field(default=True, metadata=_meta(
        "WavLM: keep the CNN feature encoder frozen", flag="--train-feature-encoder", action="store_false"))
    bf16: bool = field(default=True, metadata=_meta(
        "WavLM: bf16 autocast on CUDA", flag="--no-bf16", action="store_false"))
    max_grad_norm: float = field(default=1.0, metadata=_meta("WavLM: gradient clipping norm"))
    # eGeMAPS teachers only
    c_grid: str | None = field(default=None, metadata=_meta(
        "eGeMAPS: comma list of logistic-regression C values, the best on the validation speakers' UA is kept "
        "(default: 0.001,0.01,0.1,1,10)"))
    crossfit: bool = field(default=False, metadata=_meta(
        "eGeMAPS: give each training speaker's utterances the outputs of a model fitted without that speaker "
        "(still only on the fold's training speakers): in-sample outputs are near one-hot, so KD from them "
        "carries little beyond the labels; validation and test utterances keep the full model's outputs"))

    kind: ClassVar[str] = "teacher"
    WAVLM_ONLY: ClassVar[tuple[str, ...]] = ("revision", "head_lr", "warmup", "grad_accum", "freeze_feature_encoder",
                                             "bf16", "max_grad_norm")
    # what a logistic regression on whole-utterance functionals has no use for
    NOT_EGEMAPS: ClassVar[tuple[str, ...]] = ("epochs", "batch_size", "lr", "weight_decay", "student_params", "length",
                                              "features", "tensorboard", "device")

    @property
    def is_egemaps(self) -> bool:
        return self.model == EGEMAPS_MODEL

    @property
    def is_wavlm(self) -> bool:
        from serkd.models.wavlm_teacher import looks_like_hf_model

        return bool(self.model) and not self.is_egemaps and looks_like_hf_model(self.model)

    def resolved(self) -> TeacherConfig:
        """The kind's defaults filled in for the fields left at None."""
        base = WAVLM_DEFAULTS if self.is_wavlm else {k: _default(RunConfig, k) for k in WAVLM_DEFAULTS}
        return self.replace(**{k: v for k, v in base.items() if getattr(self, k) is None})

    def validate(self) -> None:
        if not self.model:
            raise ConfigError("model", "required")
        resolved = self.resolved()
        _Config.validate(resolved)
        for name in ("c_grid", "crossfit"):
            if getattr(self, name) != _default(TeacherConfig, name) and not self.is_egemaps:
                raise ConfigError(name, f"applies to the eGeMAPS teacher (model {EGEMAPS_MODEL}) only")
        if self.is_egemaps:
            changed = [name for name in (*self.NOT_EGEMAPS, *self.WAVLM_ONLY)
                       if getattr(self, name) != _default(TeacherConfig, name)]
            if changed:
                raise ConfigError(changed[0], "does not apply to the eGeMAPS teacher (functionals of whole utterances "
                                              "+ logistic regression)")
            if self.c_grid is not None:
                try:
                    grid = [float(c) for c in self.c_grid.split(",")]
                except ValueError:
                    grid = []
                if not grid or not all(c > 0 for c in grid):
                    raise ConfigError("c_grid", f"expected a comma list of positive numbers, got {self.c_grid!r}")
        elif self.is_wavlm:
            if self.grad_accum < 1:
                raise ConfigError("grad_accum", "must be at least 1")
            if not 0 <= self.warmup < 1:
                raise ConfigError("warmup", "is a fraction of the optimiser steps, in [0, 1)")
            if resolved.crop_length < 400:
                raise ConfigError("length", "must be at least 400 samples (25 ms) for the WavLM feature encoder")
        else:
            changed = [name for name in self.WAVLM_ONLY if getattr(self, name) != _default(TeacherConfig, name)]
            if changed:
                raise ConfigError(changed[0], f"applies to WavLM teachers only, not {self.model!r}")

    def student_config(self) -> RunConfig:
        """A CNN teacher is trained exactly as a CE student of the same model."""
        own = {f.name: getattr(self.resolved(), f.name) for f in fields(_Config)}
        return RunConfig(**own, student=self.model, student_params=self.student_params, method="ce")


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
