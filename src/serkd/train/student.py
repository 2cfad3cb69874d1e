"""The student driver: one student per fold of a corpus, trained, evaluated and recorded on disk.

    results, data = train_folds(RunConfig(corpus="synth", root="data/synth", out="runs/ce"), Emitter(print))
    result = train_fold(config, "spk00")            # one fold: the unit a grid schedules

(``serkd.train.run`` is the public face: ``run(config)`` trains the folds here, then the final model.)

``RUN_DIR/config.yaml`` holds the resolved config (``serkd train --config`` repeats the run),
``RUN_DIR/run.json`` the config, features, data hash, folds and provenance; ``RUN_DIR/<fold>/`` holds
``model.safetensors`` + ``checkpoint.json`` and ``results.json`` (a :class:`FoldResult`).

Everything that can be checked without features is checked first (:func:`plan`): config fields,
KD method and parameters, student and its options, folds, the crop length against the student's
smallest input, the teacher store (folds, labels, leaks, data hash). Each fold goes through the one
per-fold skeleton (:func:`serkd.train.fold.run_fold`): a fold whose result exists for the same config
and data is not retrained (``overwrite`` starts over). Several processes may train different folds into
one run folder at once: per-fold files are written atomically and ``run.json`` is merged under a lock.

A CNN teacher is trained exactly as a CE student (``train/teachers/cnn.py`` calls :func:`fit_student`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from serkd import distill, models
from serkd.config import ConfigError, RunConfig
from serkd.data import teacher_outputs
from serkd.data.features import FeatureConfig
from serkd.data.manifest import Manifest
from serkd.data.normalize import FoldNormalization, fold_normalization
from serkd.data.protocol import Fold, pick_folds
from serkd.data.store import MappedFeatures, feature_store
from serkd.errors import SerkdError
from serkd.layout import RUN_FILE
from serkd.train import fold as shared
from serkd.train.checkpoint import save_checkpoint
from serkd.train.events import Emitter, EpochClock, OnEvent
from serkd.train.loop import FitResult, fit, pick_device, predict_logits
from serkd.train.provenance import provenance
from serkd.train.results import MARK_SPEAKER_NORMALISED, FoldResult
from serkd.train.threads import use_threads


@dataclass
class TeacherFold:
    """A fold's teacher logits aligned with the manifest, and how far they can be trusted."""

    logits: np.ndarray
    leaked: list[str]
    stale: bool
    identity: dict  # what produced them: enters the fold key
    embeddings: np.ndarray | None = None  # [N, D] for feature-KD methods, rows as the manifest


@dataclass
class Plan:
    """A checked run: everything known before any feature is computed."""

    config: RunConfig
    manifest: Manifest
    folds: list[Fold]
    feature_config: FeatureConfig
    loss_fn: torch.nn.Module
    data_hash: str
    teacher_meta: dict[str, dict]  # fold name -> the store's metadata for that fold


@dataclass
class PreparedData:
    manifest: Manifest
    features: MappedFeatures  # (N, 1, F, T): memory-mapped, features[idx] -> float32 tensor
    targets: torch.Tensor  # (N,)
    folds: list[Fold]
    data_hash: str


def make_loss(method: str, params: dict) -> torch.nn.Module:
    """The KD method, each parameter checked against the type of its default (errors name the field)."""
    try:
        defaults = distill.defaults(method)
    except ValueError as exc:
        raise ConfigError("method", str(exc)) from None
    for key, value in params.items():
        default = defaults.get(key)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError("method_params", f"{key}={value!r}: expected true or false")
        if isinstance(default, int | float) and not isinstance(default, bool) and (
                isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigError("method_params", f"{key}={value!r}: expected a number")
    try:
        return distill.create(method, **params)
    except (ValueError, TypeError) as exc:  # the registry's own message names the method or parameter
        raise ConfigError("method_params", str(exc)) from None


def needs_teacher(loss_fn: torch.nn.Module) -> bool:
    return bool(getattr(loss_fn, "needs_teacher", False))


def check_student(config: RunConfig) -> None:
    """The student builds with its options (tried on two classes, before any data is read)."""
    try:
        models.create(config.student, num_classes=2, **config.model_options())
    except SerkdError as exc:
        raise ConfigError("student_params" if "option" in str(exc) else "student", str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError("student_params", f"{config.student}: {exc}") from None


def check_input_size(student: str, options: dict, feature_config: FeatureConfig, num_classes: int) -> None:
    """The crop length must give features the student can take: n_fft samples at least, and an input the
    student's pooling does not shrink to nothing (tried on zeros, before any feature is computed)."""
    n_fft = feature_config.params.get("n_fft", 0)
    if feature_config.length < n_fft:
        raise ConfigError("length", f"{feature_config.length} samples is shorter than one {feature_config.kind} "
                                    f"window (n_fft {n_fft})")
    height, width = feature_config.shape()
    model = models.create(student, num_classes=num_classes, **options).eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, 1, height, width))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError("length", f"{feature_config.length} samples give {height}x{width} {feature_config.kind} "
                                    f"features, too small for {student} ({first[:120]})") from None


def plan(config: RunConfig, emit: Emitter | None = None) -> Plan:
    """Check everything that needs no features; raise a one-line error for the first problem."""
    emit = emit or Emitter()
    config.validate()
    config = config.resolved()
    loss_fn = make_loss(config.method, config.method_params)
    if needs_teacher(loss_fn) and not config.teacher:
        raise ConfigError("teacher", f"method {config.method!r} needs teacher outputs (a teacher store folder)")
    if config.teacher and not needs_teacher(loss_fn):
        emit.note(f"method {config.method!r} uses no teacher: teacher {config.teacher} is ignored")
    if config.teacher and not Path(config.teacher).is_dir():
        raise ConfigError("teacher", f"{config.teacher}: teacher outputs folder not found")
    check_student(config)
    manifest = shared.load_manifest(config)
    folds = shared.run_folds(config, manifest)
    feature_config = FeatureConfig(config.features, config.crop_length)
    check_input_size(config.student, config.model_options(), feature_config, len(manifest.labels))
    data_hash = manifest.data_hash()
    teacher_meta = {}
    if config.teacher and needs_teacher(loss_fn):
        hashes = teacher_outputs.utterance_hashes(manifest)  # read once, compared with every fold's store
        teacher_meta = {f.name: check_teacher_fold(config, manifest, f, data_hash, emit, hashes) for f in folds}
        if getattr(loss_fn, "needs_embeddings", False):
            for f in folds:  # a logit-only store is refused before any feature is computed
                outputs = teacher_outputs.read_fold(Path(config.teacher), f.name)
                teacher_outputs.embedding_matrix(outputs, loss_fn.teacher_layer, Path(config.teacher) / f.name,
                                                 config.method)
    shared.check_run_folder(Path(config.out), config)
    return Plan(config, manifest, folds, feature_config, loss_fn, data_hash, teacher_meta)


def check_teacher_fold(config: RunConfig, manifest: Manifest, fold: Fold, data_hash: str, emit: Emitter,
                       hashes: dict[str, str] | None = None) -> dict:
    """The store's metadata for ``fold`` once it passed every check (labels, leak, data)."""
    store = Path(config.teacher)
    meta = teacher_outputs.read_meta(store, fold.name)
    if meta.get("labels") and meta["labels"] != manifest.labels:
        raise SerkdError(f"{store / fold.name}: teacher labels {meta['labels']} differ from the corpus' "
                         f"{manifest.labels}")
    leaked = teacher_outputs.leak_meta(meta, fold.test)
    if leaked and not config.allow_leaky_teacher:
        why = ("is not fold-clean (" + meta.get("provenance", "unknown provenance") + ")"
               if not meta.get("fold_clean", True) else f"trained on test speaker(s) {', '.join(leaked)}")
        raise SerkdError(f"{store / fold.name}: teacher {why} of fold {fold.name}; refusing to distil "
                         "(allow_leaky_teacher overrides and marks results leaky-teacher)")
    if leaked:
        emit.note(f"fold {fold.name}: teacher saw test speaker(s) {', '.join(leaked)}: results marked leaky-teacher",
                  fold.name)
    stale = teacher_outputs.stale_utterances(store, fold.name, manifest, data_hash, hashes) or 0
    if stale and not config.allow_stale_teacher:
        raise SerkdError(f"{store / fold.name}: teacher outputs were computed on other audio ({stale} of "
                         f"{len(manifest)} utterances changed; teacher data hash {meta.get('data_hash')}, corpus "
                         f"{data_hash}); retrain the teacher, or allow_stale_teacher uses them and marks results "
                         "stale-teacher")
    if stale:
        emit.note(f"fold {fold.name}: teacher outputs come from other audio: results marked stale-teacher", fold.name)
    return {**meta, "stale": bool(stale)}


def prepare(config, manifest: Manifest, folds: list[Fold], emit: Emitter, data_hash: str | None = None,
            feature_config: FeatureConfig | None = None) -> PreparedData:
    feature_config = feature_config or FeatureConfig(config.features, config.crop_length)
    advance = emit.task("features", f"features ({feature_config.kind})", len(manifest))
    features, kept, info = feature_store(manifest, feature_config, config.skip_bad, advance,
                                         getattr(config, "feature_dtype", "float32"))
    emit.done("features")
    for note in kept.notes:
        emit.note(note)
    emit.info(info.line())
    if len(kept) != len(manifest):
        data_hash = kept.data_hash()
    return PreparedData(kept, features, torch.from_numpy(kept.label_ids()), folds, data_hash or kept.data_hash())


def teacher_fold(config: RunConfig, data: PreparedData, fold: Fold, meta: dict | None = None,
                 loss_fn: torch.nn.Module | None = None) -> TeacherFold:
    """The fold's teacher logits (and, for a feature-KD ``loss_fn``, embeddings) in the manifest's order."""
    store = Path(config.teacher)
    meta = meta or check_teacher_fold(config, data.manifest, fold, data.data_hash, Emitter())
    outputs = teacher_outputs.read_fold(store, fold.name)
    rows = outputs.rows([u.utt_id for u in data.manifest.utterances], store / fold.name)
    identity = {k: meta.get(k) for k in ("config_hash", "data_hash", "provenance", "source_sha1", "teacher")}
    stale = meta.get("stale", False)
    loss_fn = loss_fn if loss_fn is not None else make_loss(config.method, config.method_params)
    embeddings = None
    if getattr(loss_fn, "needs_embeddings", False):
        embeddings = teacher_outputs.embedding_matrix(outputs, loss_fn.teacher_layer, store / fold.name,
                                                      config.method)[rows]
    return TeacherFold(outputs.logits[rows], teacher_outputs.leak_meta(meta, fold.test), stale, identity, embeddings)


def student_identity(config: RunConfig, fold: Fold, labels: list[str], teacher: TeacherFold | None) -> dict:
    """What a student fold's result comes from (its fold key hashes this); a CNN teacher's too."""
    return {"config": config.hashed_dict(), "features": FeatureConfig(config.features, config.crop_length).to_json(),
            "fold": fold.to_json(), "labels": labels, "teacher": teacher.identity if teacher else None}


@dataclass
class Trained:
    """A student fitted on one fold: the model (its best epoch restored) and how it got there."""

    model: torch.nn.Module
    fit: FitResult
    seconds: float
    test_predictions: np.ndarray
    device: torch.device
    normalization: FoldNormalization  # the features as the model saw them, and the record of how


def fit_student(config: RunConfig, data: PreparedData, fold: Fold, parts: dict, loss_fn: torch.nn.Module,
                teacher: TeacherFold | None, emit: Emitter) -> Trained:
    """Build the student (seeded), fit it on ``parts['train']`` selecting on ``parts['valid']``, predict the test."""
    norm = fold_normalization(config.normalize, FeatureConfig(config.features, config.crop_length), data.features,
                              data.manifest, parts["train"], fold.test)
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    model = models.create(config.student, num_classes=len(data.manifest.labels), **config.model_options())
    teacher_logits = torch.from_numpy(teacher.logits) if teacher is not None else None
    teacher_embeddings = (torch.from_numpy(teacher.embeddings) if teacher is not None and
                          teacher.embeddings is not None else None)
    clock = EpochClock(emit, fold.name, config.epochs, f"{config.student}/{config.method}")
    started = time.perf_counter()
    result = fit(model, loss_fn, norm.features, data.targets, parts["train"], parts["valid"], config,
                 teacher_logits, device, clock.epoch, teacher_embeddings)
    seconds = time.perf_counter() - started
    test_predictions = predict_logits(model, norm.features, parts["test"], device).argmax(axis=1)
    return Trained(model, result, seconds, test_predictions, device, norm)


def checkpoint_meta(config: RunConfig, data: PreparedData, fold: Fold, record: dict, best_epoch: int,
                    normalization: dict, run_config: dict | None = None) -> dict:
    """``checkpoint.json`` of a model fitted on a fold (a student, or a CNN teacher: ``run_config`` its config)."""
    return {"model": config.student, "model_options": config.model_options(), "labels": data.manifest.labels,
            "features": FeatureConfig(config.features, config.crop_length).to_json(), "fold": fold.to_json(),
            "config": run_config or config.to_dict(), "data_hash": data.data_hash, "provenance": record,
            "best_epoch": best_epoch, "normalization": normalization}


class StudentJob(shared.FoldJob):
    """One student fold for :func:`serkd.train.fold.run_fold`."""

    def __init__(self, config: RunConfig, data: PreparedData, fold: Fold, teacher: TeacherFold | None,
                 loss_fn: torch.nn.Module, emit: Emitter):
        super().__init__(fold, Path(config.out), data.manifest, data.data_hash, config.tensorboard)
        self.config, self.data, self.teacher, self.loss_fn, self.emit = config, data, teacher, loss_fn, emit

    def identity(self) -> dict:
        return student_identity(self.config, self.fold, self.manifest.labels, self.teacher)

    def train(self, split: shared.FoldSplit) -> FoldResult:
        config, teacher = self.config, self.teacher
        trained = fit_student(config, self.data, self.fold, split.parts, self.loss_fn, teacher, self.emit)
        history, best_epoch = trained.fit.history, trained.fit.best_epoch
        best = history[best_epoch - 1]
        record = provenance()  # git runs in a subprocess: once per fold
        result = shared.base_result(
            self.manifest, self.fold, split.parts, trained.test_predictions, split.absent_test, student=config.student,
            method=config.method, features=config.features, role="student", valid_wa=best["valid_wa"],
            valid_ua=best["valid_ua"], best_epoch=best_epoch, epochs=config.epochs,
            marks=shared.marks(self.fold, bool(teacher and teacher.leaked), bool(teacher and teacher.stale))
            + ([MARK_SPEAKER_NORMALISED] if trained.normalization.normalize == "speaker" else []),
            method_params=config.method_params, teacher=config.teacher if teacher is not None else None,
            seed=config.seed, data_hash=self.data_hash, config_hash=split.key, git_commit=record["git_commit"],
            train_seconds=round(trained.seconds, 2), history=history,
            extra={"recipe": config.recipe, "epochs_run": len(history), "normalize": trained.normalization.normalize})
        save_checkpoint(self.folder, trained.model, checkpoint_meta(config, self.data, self.fold, record, best_epoch,
                                                                    trained.normalization.record))
        return result


def _resolve_fold(fold: Fold | str | int, folds: list[Fold]) -> Fold:
    if isinstance(fold, Fold):
        return fold
    return pick_folds(folds, str(fold))[0]


def train_fold(config: RunConfig, fold: Fold | str | int, data: PreparedData | None = None,
               teacher: TeacherFold | None = None, on_event: OnEvent | None = None, overwrite: bool = False,
               loss_fn: torch.nn.Module | None = None) -> FoldResult:
    """Train, select, test and record one fold of ``config`` into ``config.out/<fold>``; return its result.

    ``data`` (features of the whole corpus) and ``teacher`` (this fold's teacher logits) are loaded when
    not given. A finished result for the same config and data is returned as it is (``overwrite``:
    retrain). ``loss_fn``: this fold's KD loss when the caller built it already (one per fold).
    """
    emit = Emitter(on_event)
    config = config.resolved()  # the recipe's values: what the fold key, the record and fit see
    if data is None:
        checked = plan(config, emit)
        data = prepare(config, checked.manifest, checked.folds, emit, checked.data_hash, checked.feature_config)
        if loss_fn is None:
            loss_fn = checked.loss_fn  # built by plan to check it, never used: this fold's
    fold = _resolve_fold(fold, data.folds)
    if loss_fn is None:
        loss_fn = make_loss(config.method, config.method_params)
    if teacher is None and config.teacher and needs_teacher(loss_fn):
        teacher = teacher_fold(config, data, fold, loss_fn=loss_fn)
    return shared.run_fold(StudentJob(config, data, fold, teacher, loss_fn, emit), emit, overwrite)


def train_folds(config: RunConfig, on_event: OnEvent | None = None,
                overwrite: bool = False) -> tuple[list[FoldResult], PreparedData]:
    """Train every chosen fold of ``config`` (resuming: finished folds are reused); their results and the
    prepared data (the final model trains on it)."""
    emit = Emitter(on_event)
    config = config.resolved()
    out = Path(config.out)
    if overwrite and (out / RUN_FILE).is_file():
        shared.clear_run(out)
    checked = plan(config, emit)
    use_threads(config.threads, emit)  # unset: one per physical core of this process' share; warns if oversubscribed
    data = prepare(config, checked.manifest, checked.folds, emit, checked.data_hash, checked.feature_config)
    losses = {f.name: make_loss(config.method, config.method_params) for f in data.folds}  # one per fold
    # every fold's teacher outputs are read (and checked) before any fold trains
    teachers = {f.name: teacher_fold(config, data, f, checked.teacher_meta[f.name], losses[f.name])
                for f in data.folds if f.name in checked.teacher_meta}
    shared.record_run(out, config, data, role="student")
    results = [train_fold(config, fold, data, teachers.get(fold.name), on_event, overwrite, losses[fold.name])
               for fold in data.folds]
    return results, data
