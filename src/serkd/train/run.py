"""The student driver: one model per fold of a corpus, trained, evaluated and recorded on disk.

    results = run(RunConfig(corpus="synth", root="data/synth", out="runs/ce"), on_event=print)
    result = train_fold(config, "spk00")            # one fold: the unit a grid schedules

``RUN_DIR/config.yaml`` holds the resolved config (``serkd train --config`` repeats the run),
``RUN_DIR/run.json`` the config, features, data hash, folds and provenance; ``RUN_DIR/<fold>/`` holds
``model.safetensors`` + ``checkpoint.json`` and ``results.json`` (a :class:`FoldResult`).

Everything that can be checked without features is checked first (:func:`plan`): config fields,
KD method and parameters, student and its options, folds, the crop length against the student's
smallest input, the teacher store (folds, labels, leaks, data hash). A fold whose result exists for
the same config and data is not retrained (``overwrite`` starts over). Several processes may train
different folds into one run folder at once: per-fold files are written atomically and ``run.json``
is merged under a lock.

CNN teachers are trained here too (:func:`run` with a ``store``): the model's logits and penultimate
embeddings for every utterance go to a teacher outputs store beside its results.
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
from serkd.data.protocol import Fold, fold_indices, pick_folds
from serkd.data.store import MappedFeatures, feature_store
from serkd.errors import SerkdError
from serkd.layout import RUN_FILE
from serkd.train import fold as shared
from serkd.train.checkpoint import save_checkpoint
from serkd.train.events import Emitter, EpochClock, Event, OnEvent
from serkd.train.fold import check_run_folder, clear_run, load_manifest, record_run, run_folds
from serkd.train.loop import fit, pick_device, predict_logits
from serkd.train.provenance import provenance
from serkd.train.results import FoldResult, write_curves
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
    if getattr(loss_fn, "needs_teacher", False) and not config.teacher:
        raise ConfigError("teacher", f"method {config.method!r} needs teacher outputs (a teacher store folder)")
    if config.teacher and not getattr(loss_fn, "needs_teacher", False):
        emit.note(f"method {config.method!r} uses no teacher: teacher {config.teacher} is ignored")
    if config.teacher and not Path(config.teacher).is_dir():
        raise ConfigError("teacher", f"{config.teacher}: teacher outputs folder not found")
    try:
        models.create(config.student, num_classes=2, **config.model_options())
    except SerkdError as exc:
        raise ConfigError("student_params" if "option" in str(exc) else "student", str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError("student_params", f"{config.student}: {exc}") from None
    manifest = load_manifest(config)
    folds = run_folds(config, manifest)
    feature_config = FeatureConfig(config.features, config.crop_length)
    check_input_size(config.student, config.model_options(), feature_config, len(manifest.labels))
    data_hash = manifest.data_hash()
    teacher_meta = {}
    if config.teacher and getattr(loss_fn, "needs_teacher", False):
        hashes = teacher_outputs.utterance_hashes(manifest)  # read once, compared with every fold's store
        teacher_meta = {f.name: check_teacher_fold(config, manifest, f, data_hash, emit, hashes) for f in folds}
        if getattr(loss_fn, "needs_embeddings", False):
            for f in folds:  # a logit-only store is refused before any feature is computed
                outputs = teacher_outputs.read_fold(Path(config.teacher), f.name)
                teacher_outputs.embedding_matrix(outputs, loss_fn.teacher_layer, Path(config.teacher) / f.name,
                                                 config.method)
    check_run_folder(Path(config.out), config)
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


def teacher_fold(config: RunConfig, data: PreparedData, fold: Fold, meta: dict | None = None) -> TeacherFold:
    store = Path(config.teacher)
    meta = meta or check_teacher_fold(config, data.manifest, fold, data.data_hash, Emitter())
    outputs = teacher_outputs.read_fold(store, fold.name)
    rows = outputs.rows([u.utt_id for u in data.manifest.utterances], store / fold.name)
    identity = {k: meta.get(k) for k in ("config_hash", "data_hash", "provenance", "source_sha1", "teacher")}
    stale = meta.get("stale", False)
    loss_fn = make_loss(config.method, config.method_params)
    embeddings = None
    if getattr(loss_fn, "needs_embeddings", False):
        embeddings = teacher_outputs.embedding_matrix(outputs, loss_fn.teacher_layer, store / fold.name,
                                                      config.method)[rows]
    return TeacherFold(outputs.logits[rows], teacher_outputs.leak_meta(meta, fold.test), stale, identity, embeddings)


def _fold_identity(config: RunConfig, fold: Fold, data: PreparedData, teacher: TeacherFold | None) -> dict:
    return {"config": config.hashed_dict(), "features": FeatureConfig(config.features, config.crop_length).to_json(),
            "fold": fold.to_json(), "labels": data.manifest.labels,
            "teacher": teacher.identity if teacher else None}


def _resolve_fold(fold: Fold | str | int, folds: list[Fold]) -> Fold:
    if isinstance(fold, Fold):
        return fold
    return pick_folds(folds, str(fold))[0]


def train_fold(config: RunConfig, fold: Fold | str | int, data: PreparedData | None = None,
               teacher: TeacherFold | None = None, on_event: OnEvent | None = None,
               store: str | Path | None = None, overwrite: bool = False) -> FoldResult:
    """Train, select, test and record one fold of ``config`` into ``config.out/<fold>``; return its result.

    ``data`` (features of the whole corpus) and ``teacher`` (this fold's teacher logits) are loaded when
    not given. A finished result for the same config and data is returned as it is (``overwrite``:
    retrain). ``store``: also write the model's outputs for every utterance there (a CNN teacher).
    """
    emit = Emitter(on_event)
    config = config.resolved()  # the recipe's values: what the fold key, the record and fit see
    if data is None:
        checked = plan(config, emit)
        data = prepare(config, checked.manifest, checked.folds, emit, checked.data_hash, checked.feature_config)
    fold = _resolve_fold(fold, data.folds)
    if teacher is None and config.teacher and getattr(make_loss(config.method, config.method_params),
                                                      "needs_teacher", False):
        teacher = teacher_fold(config, data, fold)
    out = Path(config.out)
    fold_dir = out / fold.name
    key = shared.fold_key(_fold_identity(config, fold, data, teacher))
    cached = None if overwrite else shared.cached_result(fold_dir, key, data.data_hash)
    if cached and (store is None or teacher_outputs.cached(Path(store), fold.name, key, data.data_hash)):
        emit.info(f"fold {fold.name}: cached (same config and data)", fold.name)
        emit(Event("fold_done", fold=fold.name, data={"result": cached, "cached": True}))
        return cached

    manifest = data.manifest
    parts = fold_indices(manifest, fold)
    absent_test = shared.check_fold(manifest, fold, parts, emit)
    device = pick_device(config.device)
    loss_fn = make_loss(config.method, config.method_params)
    torch.manual_seed(config.seed)
    model = models.create(config.student, num_classes=len(manifest.labels), **config.model_options())
    teacher_logits = torch.from_numpy(teacher.logits) if teacher is not None else None
    clock = EpochClock(emit, fold.name, config.epochs, f"{config.student}/{config.method}")
    started = time.perf_counter()
    teacher_embeddings = (torch.from_numpy(teacher.embeddings) if teacher is not None and
                          teacher.embeddings is not None else None)
    result = fit(model, loss_fn, data.features, data.targets, parts["train"], parts["valid"], config,
                 teacher_logits, device, clock.epoch, teacher_embeddings)
    seconds = time.perf_counter() - started
    test_pred = predict_logits(model, data.features, parts["test"], device).argmax(axis=1)
    best = result.history[result.best_epoch - 1]
    record = provenance()  # git runs in a subprocess: once per fold
    git_commit = record["git_commit"]
    features_json = FeatureConfig(config.features, config.crop_length).to_json()
    fold_result = shared.base_result(
        manifest, fold, parts, test_pred, absent_test, student=config.student,
        method="teacher" if store else config.method,
        features=config.features, role="teacher" if store else "student", valid_wa=best["valid_wa"],
        valid_ua=best["valid_ua"], best_epoch=result.best_epoch, epochs=config.epochs,
        marks=shared.marks(fold, bool(teacher and teacher.leaked), bool(teacher and teacher.stale)),
        method_params=config.method_params, teacher=config.teacher if teacher is not None else None,
        seed=config.seed, data_hash=data.data_hash, config_hash=key, git_commit=git_commit,
        train_seconds=round(seconds, 2), history=result.history,
        extra={"recipe": config.recipe, "epochs_run": len(result.history)})
    save_checkpoint(fold_dir, model, {
        "model": config.student, "model_options": config.model_options(), "labels": manifest.labels,
        "features": features_json, "fold": fold.to_json(),
        "config": config.to_dict(), "data_hash": data.data_hash, "provenance": record,
        "best_epoch": result.best_epoch,
    })
    if store:
        all_logits, embeddings = predict_logits(model, data.features, np.arange(len(manifest)), device,
                                                with_embeddings=True)
        teacher_outputs.write_fold(Path(store), fold.name, [u.utt_id for u in manifest.utterances], all_logits,
                                   shared.teacher_meta(fold, manifest, config, data.data_hash, key, best,
                                                       teacher=config.student, best_epoch=result.best_epoch,
                                                       features=features_json,
                                                       git_commit=git_commit,
                                                       embedding_dim=int(embeddings.shape[1]) if embeddings is not None
                                                       else None),
                                   embeddings=embeddings)
    if config.tensorboard:
        write_curves(out / "tensorboard" / fold.name, fold_result.to_json(), step=0)
    shared.write_result(fold_dir, fold_result)
    emit.info(shared.done_line(fold_result), fold.name)
    emit(Event("fold_done", fold=fold.name, data={"result": fold_result, "cached": False}))
    return fold_result


def run(config: RunConfig, on_event: OnEvent | None = None, overwrite: bool = False,
        store: str | Path | None = None) -> list[FoldResult]:
    """Train every chosen fold of ``config`` (resuming: finished folds are reused); return their results.

    ``config.final``: then train ``RUN_DIR/final`` on every speaker (:func:`serkd.train.final.train_final`)."""
    emit = Emitter(on_event)
    config = config.resolved()
    out = Path(config.out)
    if overwrite and (out / RUN_FILE).is_file():
        clear_run(out)
    checked = plan(config, emit)
    use_threads(config.threads, emit)  # unset: one per physical core of this process' share; warns if oversubscribed
    data = prepare(config, checked.manifest, checked.folds, emit, checked.data_hash, checked.feature_config)
    teachers = {f.name: teacher_fold(config, data, f, checked.teacher_meta[f.name]) for f in data.folds
                if f.name in checked.teacher_meta}
    record_run(out, config, data, role="teacher" if store else "student")
    results = [train_fold(config, fold, data, teachers.get(fold.name), on_event, store, overwrite)
               for fold in data.folds]
    if getattr(config, "final", False) and not store:
        from serkd.train.final import train_final

        train_final(config, data, on_event, overwrite)
    return results
