"""The classical SER baseline as a teacher: eGeMAPSv02 functionals + standardised logistic regression per fold.

Per fold: fit ``StandardScaler -> LogisticRegression`` (class-balanced, since UA weighs classes equally)
on the fold's training speakers only, once per value of the regularisation ``C`` in the grid; keep the
``C`` with the best UA on the validation speaker(s) (ties: the smaller C, the stronger regularisation);
then write, for *every* utterance of the corpus, the log-probabilities as logits and the standardised
features as embeddings [N, 88] to the teacher outputs store, with the fold's training speakers, data
hash and audio hashes, exactly as the CNN and WavLM teachers do. Beside them a ``results.json``
(role teacher, method teacher, student ``egemaps+logreg``): ``serkd report OUT`` shows the baseline row.

``crossfit``: the training utterances get out-of-speaker outputs instead (see :func:`crossfit_train`):
a model's outputs on the very utterances it was fitted on are near one-hot (p(true) 0.99 on the demo
corpus), so KD from them teaches little beyond the labels.

No GPU, seconds per fold: a teacher for CPU-only KD, and the number a student has to beat.
A fold whose outputs exist with the same config and data is not refitted; features come from the
eGeMAPS cache (``data/egemaps.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serkd.config import TeacherConfig
from serkd.data import teacher_outputs
from serkd.data.egemaps import egemaps_matrix, feature_set
from serkd.data.manifest import Manifest
from serkd.data.protocol import Fold, fold_indices
from serkd.train import fold as shared
from serkd.train.events import Emitter, Event, OnEvent
from serkd.train.metrics import wa_ua
from serkd.train.provenance import provenance
from serkd.train.results import FoldResult

DISPLAY = "egemaps+logreg"
C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)


@dataclass
class EgemapsData:
    manifest: Manifest
    features: np.ndarray  # (N, 88)
    targets: np.ndarray
    data_hash: str
    folds: list[Fold]


def c_grid(config: TeacherConfig) -> tuple[float, ...]:
    return tuple(float(c) for c in config.c_grid.split(",")) if config.c_grid else C_GRID


def train_teacher(config: TeacherConfig, on_event: OnEvent | None = None, overwrite: bool = False) -> list[FoldResult]:
    """Fit (or reuse) the eGeMAPS teacher of every chosen fold into the store ``config.out``."""
    emit = Emitter(on_event)
    config.validate()
    out = Path(config.out)
    if overwrite:
        shared.clear_run(out)
    manifest = shared.load_manifest(config)
    folds = shared.run_folds(config, manifest)
    advance = emit.task("egemaps", "eGeMAPS functionals", len(manifest))
    features, manifest, store = egemaps_matrix(manifest, config.skip_bad, advance)
    emit.done("egemaps")
    for note in manifest.notes:
        emit.note(note)
    emit.info(f"eGeMAPS: {store.computed} computed, {store.reused} from cache ({store.folder})")
    data = EgemapsData(manifest, features, manifest.label_ids(), manifest.data_hash(), folds)
    shared.record_run(out, config, data, role="teacher", features=feature_set(), model=config.model)
    return [_fold(config, data, fold, out, emit, overwrite) for fold in data.folds]


def fold_key(config: TeacherConfig, fold: Fold, labels) -> str:
    # where the corpus lies and which folds this call fits change no output: data hash and fold say it
    return shared.fold_key({"model": DISPLAY, "config": config.hashed_dict(), "c_grid": c_grid(config),
                            "features": feature_set(), "labels": list(labels), "fold": fold.to_json()})


def fit_fold(features: np.ndarray, targets: np.ndarray, parts: dict, grid, seed: int = 0):
    """The pipeline fitted on ``parts['train']`` with the C of the best validation UA, and the grid's scores."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best, history = None, []
    for c in sorted(grid):  # ascending: a tie keeps the smaller C (stronger regularisation)
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=5000,
                                                                   random_state=seed))
        model.fit(features[parts["train"]], targets[parts["train"]])
        valid_wa, valid_ua = wa_ua(targets[parts["valid"]], model.predict(features[parts["valid"]]))
        history.append({"C": c, "valid_wa": valid_wa, "valid_ua": valid_ua})
        if best is None or valid_ua > best[1]["valid_ua"]:
            best = (model, history[-1])
    return best[0], best[1], history


def crossfit_train(data: EgemapsData, parts: dict, c: float, seed: int = 0) -> np.ndarray:
    """Log-probabilities of the training utterances, each speaker's from a model fitted on the *other*
    training speakers (C as chosen): what the teacher knows about a speaker it has not heard, which is
    what a student should learn from. The fold's validation and test speakers are never used."""
    speakers = np.array([data.manifest.utterances[i].speaker for i in parts["train"]])
    out = np.zeros((len(parts["train"]), len(data.manifest.labels)), dtype=np.float32)
    for speaker in np.unique(speakers):
        held = speakers == speaker
        rest = np.asarray(parts["train"])[~held]
        missing = set(range(len(data.manifest.labels))) - set(data.targets[rest].tolist())
        if missing:  # a class only this speaker has: fall back to the in-sample model for its utterances
            rest = np.asarray(parts["train"])
        model, _, _ = fit_fold(data.features, data.targets, {"train": rest, "valid": rest}, [c], seed)
        out[held] = log_probabilities(model, data.features[np.asarray(parts["train"])[held]])
    return out


def log_probabilities(model, features: np.ndarray) -> np.ndarray:
    """log p(class | x) from the linear scores (a log-softmax): finite where ``predict_log_proba`` gives
    log(0) = -inf for a class the model rules out, which no KD loss or mixup should see."""
    scores = model.decision_function(features).astype(np.float64)
    scores -= scores.max(axis=1, keepdims=True)
    return (scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))).astype(np.float32)


def _fold(config: TeacherConfig, data: EgemapsData, fold: Fold, out: Path, emit: Emitter,
          overwrite: bool) -> FoldResult:
    labels = data.manifest.labels
    parts = fold_indices(data.manifest, fold)
    absent_test = shared.check_fold(data.manifest, fold, parts, emit)
    key = fold_key(config, fold, labels)
    cached = None if overwrite else shared.cached_result(out / fold.name, key, data.data_hash)
    if cached and teacher_outputs.cached(out, fold.name, key, data.data_hash):
        emit.info(f"fold {fold.name}: cached (same config and data)", fold.name)
        emit(Event("fold_done", fold=fold.name, data={"result": cached, "cached": True}))
        return cached

    started = time.perf_counter()
    model, best, history = fit_fold(data.features, data.targets, parts, c_grid(config), config.seed)
    seconds = time.perf_counter() - started
    # log-probabilities over every label: a class the fold never saw would be missing from predict_log_proba's
    # columns, but check_fold refuses such folds
    logits = log_probabilities(model, data.features)
    if config.crossfit:
        logits[parts["train"]] = crossfit_train(data, parts, best["C"], config.seed)
    embeddings = model[:-1].transform(data.features).astype(np.float32)
    git_commit = provenance()["git_commit"]
    meta = shared.teacher_meta(fold, data.manifest, config, data.data_hash, key, best, teacher=DISPLAY,
                               model_id=config.model, features=feature_set(), git_commit=git_commit,
                               embedding_dim=int(embeddings.shape[1]), C=best["C"], crossfit=config.crossfit)
    teacher_outputs.write_fold(out, fold.name, [u.utt_id for u in data.manifest.utterances], logits, meta,
                               embeddings=embeddings)
    result = shared.base_result(
        data.manifest, fold, parts, logits[parts["test"]].argmax(axis=1), absent_test, student=DISPLAY,
        method="teacher", features="egemaps", role="teacher", valid_wa=best["valid_wa"], valid_ua=best["valid_ua"],
        marks=shared.marks(fold), seed=config.seed, data_hash=data.data_hash, config_hash=key, git_commit=git_commit,
        train_seconds=round(seconds, 2), history=history, extra={"model_id": config.model, "C": best["C"]})
    shared.write_result(out / fold.name, result)
    emit.info(f"{fold.name}: teacher test WA {100 * result.wa:.2f}  UA {100 * result.ua:.2f}  (C={best['C']:g} "
              f"chosen on validation UA, {seconds:.1f} s)", fold.name)
    emit(Event("fold_done", fold=fold.name, data={"result": result, "cached": False}))
    return result
