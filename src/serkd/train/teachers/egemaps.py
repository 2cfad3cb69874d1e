"""The classical SER baseline as a teacher: eGeMAPSv02 functionals + standardised logistic regression per fold.

Per fold: fit ``StandardScaler -> LogisticRegression`` (class-balanced, since UA weighs classes equally)
on the fold's training speakers only, once per value of the regularisation ``C`` in the grid; keep the
``C`` with the best UA on the validation speaker(s) (ties: the smaller C, the stronger regularisation);
then store, for *every* utterance of the corpus, the log-probabilities as logits and the standardised
features as embeddings [N, 88], with the fold's training speakers, data hash and audio hashes, as every
teacher kind does. Beside them a ``results.json`` (role teacher, method teacher, student
``egemaps+logreg``: ``serkd report OUT`` shows the baseline row) and the fitted pipeline
(``teacher.safetensors``: scaler and regression as arrays, ``teacher.json``; rebuilt on load, so the
loaded teacher computes with scikit-learn's own code, exactly as the fitted one).

``crossfit``: the training utterances get out-of-speaker outputs instead (see :func:`crossfit_train`):
a model's outputs on the very utterances it was fitted on are near one-hot (p(true) 0.99 on the demo
corpus), so KD from them teaches little beyond the labels.

No GPU, seconds per fold: a teacher for CPU-only KD, and the number a student has to beat.
Features come from the eGeMAPS cache by audio SHA-1 (``data/egemaps.py``), for the corpus and for any
other audio a fitted teacher labels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from safetensors.numpy import load_file, save_file

from serkd.config import ConfigError, TeacherConfig, meta
from serkd.data.egemaps import egemaps_matrix, feature_set
from serkd.data.manifest import Manifest
from serkd.data.protocol import Fold
from serkd.data.teacher_outputs import TeacherOutputs
from serkd.errors import SerkdError
from serkd.io import atomic_write_with
from serkd.train import fold as shared
from serkd.train.events import Emitter
from serkd.train.metrics import wa_ua
from serkd.train.teachers import Fit, FoldTeacher, TeacherCorpus, TeacherKind, register

DISPLAY = "egemaps+logreg"
C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)
WEIGHTS = "teacher.safetensors"


@dataclass(kw_only=True)
class EgemapsTeacherConfig(TeacherConfig):
    """openSMILE eGeMAPSv02 functionals of whole utterances + logistic regression: no epochs, no crop, no GPU."""

    c_grid: str | None = field(default=None, metadata=meta(
        "comma list of logistic-regression C values, the best on the validation speakers' UA is kept "
        f"(default: {','.join(f'{c:g}' for c in C_GRID)})"))
    crossfit: bool = field(default=False, metadata=meta(
        "give each training speaker's utterances the outputs of a model fitted without that speaker "
        "(still only on the fold's training speakers): in-sample outputs are near one-hot, so KD from them "
        "carries little beyond the labels; validation and test utterances keep the full model's outputs"))

    def validate(self) -> None:
        super().validate()
        if self.c_grid is not None:
            try:
                grid = [float(c) for c in self.c_grid.split(",")]
            except ValueError:
                grid = []
            if not grid or not all(c > 0 for c in grid):
                raise ConfigError("c_grid", f"expected a comma list of positive numbers, got {self.c_grid!r}")

    def derived_values(self) -> dict:
        return {**super().derived_values(), **({"c_grid": ",".join(f"{c:g}" for c in C_GRID)} if not self.c_grid
                                               else {})}

    def grid(self) -> tuple[float, ...]:
        return tuple(float(c) for c in self.c_grid.split(",")) if self.c_grid else C_GRID


class EgemapsTeacher(FoldTeacher):
    """A fitted scaler + logistic regression: log-probabilities and standardised functionals [N, 88]."""

    def __init__(self, pipeline, labels: list[str], c: float):
        self.pipeline, self.labels, self.c = pipeline, list(labels), c
        self.display = DISPLAY

    def read_inputs(self, manifest: Manifest, skip_bad: bool = False,
                    emit: Emitter | None = None) -> tuple[np.ndarray, Manifest]:
        return read_functionals(manifest, skip_bad, emit or Emitter())

    def predict_inputs(self, inputs: np.ndarray, utt_ids) -> TeacherOutputs:
        # log-probabilities over every label: a class the fold never saw would be missing from predict_log_proba's
        # columns, but check_fold refuses such folds
        embeddings = self.pipeline[:-1].transform(inputs).astype(np.float32)
        return TeacherOutputs(list(utt_ids), log_probabilities(self.pipeline, inputs),
                              {"embedding_dim": int(embeddings.shape[1])}, embeddings)

    def state(self) -> dict:
        scaler, regression = self.pipeline[0], self.pipeline[-1]
        return {"C": self.c, "classes": regression.classes_.tolist(), "max_iter": regression.max_iter,
                "n_samples_seen": np.asarray(scaler.n_samples_seen_).tolist(), "feature_set": feature_set()}

    def save_weights(self, folder: Path) -> None:
        scaler, regression = self.pipeline[0], self.pipeline[-1]
        arrays = {"scaler_mean": scaler.mean_, "scaler_var": scaler.var_, "scaler_scale": scaler.scale_,
                  "coef": regression.coef_, "intercept": regression.intercept_}
        atomic_write_with(folder / WEIGHTS, lambda tmp: save_file({k: np.ascontiguousarray(v) for k, v in
                                                                   arrays.items()}, str(tmp)), suffix=".safetensors")

    @classmethod
    def load(cls, folder: Path, state: dict, device: str = "auto") -> EgemapsTeacher:
        if not (folder / WEIGHTS).is_file():
            raise SerkdError(f"{folder}: no {WEIGHTS} beside teacher.json")
        arrays = load_file(str(folder / WEIGHTS))
        scaler, regression = _pipeline(state["C"], max_iter=state["max_iter"])
        scaler.mean_, scaler.var_, scaler.scale_ = arrays["scaler_mean"], arrays["scaler_var"], arrays["scaler_scale"]
        scaler.n_features_in_ = regression.n_features_in_ = arrays["coef"].shape[1]
        scaler.n_samples_seen_ = np.asarray(state["n_samples_seen"])
        regression.coef_, regression.intercept_ = arrays["coef"], arrays["intercept"]
        regression.classes_ = np.asarray(state["classes"])
        from sklearn.pipeline import make_pipeline

        return cls(make_pipeline(scaler, regression), state["labels"], state["C"])


@register("egemaps")
class EgemapsKind(TeacherKind):
    Config = EgemapsTeacherConfig
    Teacher = EgemapsTeacher
    title = "the eGeMAPS teacher"
    # the fields the one TeacherConfig of every kind hashed before the kinds had their own configs, at the
    # values they always had for the eGeMAPS teacher: fold keys stay those of stores fitted before (reused)
    KEY_COMPAT: ClassVar[dict] = {
        "features": "mel", "length": None, "epochs": None, "batch_size": None, "lr": None, "weight_decay": None,
        "student_params": {}, "revision": None, "head_lr": 0.0005, "warmup": 0.1, "grad_accum": 1,
        "freeze_feature_encoder": True, "bf16": True, "max_grad_norm": 1.0}

    @classmethod
    def claims(cls, model: str) -> bool:
        return model == "egemaps"

    def read_corpus(self) -> TeacherCorpus:
        config = self.config
        manifest = shared.load_manifest(config)
        folds = shared.run_folds(config, manifest)
        features, manifest = read_functionals(manifest, config.skip_bad, self.emit)
        return TeacherCorpus(manifest, folds, manifest.data_hash(), features, feature_set(), "egemaps")

    def identity(self, fold: Fold, labels: list[str]) -> dict:
        # where the corpus lies and which folds this call fits change no output: data hash and fold say it
        return {"model": DISPLAY, "config": {**self.KEY_COMPAT, **self.config.hashed_dict()},
                "c_grid": self.config.grid(), "features": feature_set(), "labels": list(labels),
                "fold": fold.to_json()}

    def fit(self, corpus: TeacherCorpus, fold: Fold, parts: dict[str, np.ndarray]) -> Fit:
        started = time.perf_counter()
        pipeline, best, history = fit_fold(corpus.inputs, corpus.manifest.label_ids(), parts, self.config.grid(),
                                           self.config.seed)
        seconds = time.perf_counter() - started
        teacher = EgemapsTeacher(pipeline, corpus.manifest.labels, best["C"])
        return Fit(teacher, history, best, seconds, extra={"model_id": self.config.model, "C": best["C"]},
                   meta={"model_id": self.config.model, "C": best["C"], "crossfit": self.config.crossfit},
                   chosen=f"C={best['C']:g}")

    def corpus_outputs(self, fit: Fit, corpus: TeacherCorpus, parts: dict[str, np.ndarray]) -> TeacherOutputs:
        outputs = super().corpus_outputs(fit, corpus, parts)
        if self.config.crossfit:
            outputs.logits[parts["train"]] = crossfit_train(corpus, parts, fit.best["C"], self.config.seed)
        return outputs


def read_functionals(manifest: Manifest, skip_bad: bool, emit: Emitter) -> tuple[np.ndarray, Manifest]:
    """The (N, 88) eGeMAPS functionals of every utterance, through the cache (bad audio as ``per_utterance``)."""
    advance = emit.task("egemaps", "eGeMAPS functionals", len(manifest))
    features, kept, store = egemaps_matrix(manifest, skip_bad, advance)
    emit.done("egemaps")
    for note in kept.notes:
        emit.note(note)
    emit.info(f"eGeMAPS: {store.computed} computed, {store.reused} from cache ({store.folder})")
    return features, kept


def _pipeline(c: float, seed: int = 0, max_iter: int = 5000):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    return StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=max_iter, random_state=seed)


def fit_fold(features: np.ndarray, targets: np.ndarray, parts: dict, grid, seed: int = 0):
    """The pipeline fitted on ``parts['train']`` with the C of the best validation UA, and the grid's scores."""
    from sklearn.pipeline import make_pipeline

    best, history = None, []
    for c in sorted(grid):  # ascending: a tie keeps the smaller C (stronger regularisation)
        model = make_pipeline(*_pipeline(c, seed))
        model.fit(features[parts["train"]], targets[parts["train"]])
        valid_wa, valid_ua = wa_ua(targets[parts["valid"]], model.predict(features[parts["valid"]]))
        history.append({"C": c, "valid_wa": valid_wa, "valid_ua": valid_ua})
        if best is None or valid_ua > best[1]["valid_ua"]:
            best = (model, history[-1])
    return best[0], best[1], history


def crossfit_train(corpus: TeacherCorpus, parts: dict, c: float, seed: int = 0) -> np.ndarray:
    """Log-probabilities of the training utterances, each speaker's from a model fitted on the *other*
    training speakers (C as chosen): what the teacher knows about a speaker it has not heard, which is
    what a student should learn from. The fold's validation and test speakers are never used."""
    manifest, features, targets = corpus.manifest, corpus.inputs, corpus.manifest.label_ids()
    speakers = np.array([manifest.utterances[i].speaker for i in parts["train"]])
    out = np.zeros((len(parts["train"]), len(manifest.labels)), dtype=np.float32)
    for speaker in np.unique(speakers):
        held = speakers == speaker
        rest = np.asarray(parts["train"])[~held]
        missing = set(range(len(manifest.labels))) - set(targets[rest].tolist())
        if missing:  # a class only this speaker has: fall back to the in-sample model for its utterances
            rest = np.asarray(parts["train"])
        model, _, _ = fit_fold(features, targets, {"train": rest, "valid": rest}, [c], seed)
        out[held] = log_probabilities(model, features[np.asarray(parts["train"])[held]])
    return out


def log_probabilities(model, features: np.ndarray) -> np.ndarray:
    """log p(class | x) from the linear scores (a log-softmax): finite where ``predict_log_proba`` gives
    log(0) = -inf for a class the model rules out, which no KD loss or mixup should see."""
    scores = model.decision_function(features).astype(np.float64)
    scores -= scores.max(axis=1, keepdims=True)
    return (scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))).astype(np.float32)
