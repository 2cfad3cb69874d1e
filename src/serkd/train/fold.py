"""What every per-fold driver shares (students and every teacher kind): the corpus and its folds, the run
record, fold checks, the key that says whether a finished fold can be reused, marks, the one result
schema written atomically, and the one per-fold skeleton (:func:`run_fold`) that drives them all:

    check the fold -> its key -> cached? -> fit -> write outputs -> result -> emit

A driver describes one fold as a :class:`FoldJob` (what its key hashes, how it trains and what it
writes); ``train/student.py`` (students) and ``train/teachers/`` (every teacher kind) import this
module and never each other.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serkd.config import ConfigError
from serkd.data import teacher_outputs
from serkd.data.corpora import load_corpus
from serkd.data.features import FeatureConfig
from serkd.data.manifest import Manifest
from serkd.data.protocol import Fold, fold_indices, pick_folds, select_on_test
from serkd.errors import SerkdError
from serkd.io import atomic_write_json, atomic_write_text, locked, read_json
from serkd.layout import CONFIG_FILE, FINAL, RESULTS, RUN_FILE
from serkd.train.events import Emitter, Event
from serkd.train.loop import pick_device
from serkd.train.metrics import confusion, wa_ua
from serkd.train.provenance import provenance
from serkd.train.results import MARK_LEAKY_TEACHER, MARK_STALE_TEACHER, MARK_TEST_SELECTED, FoldResult, write_curves


def load_manifest(config) -> Manifest:
    """The corpus, bad files failing the run (or dropped with ``skip_bad``)."""
    try:
        manifest = load_corpus(config.corpus, config.root, **config.corpus_options)
    except TypeError as exc:  # a reader given an option it does not take
        raise ConfigError("corpus_options", str(exc)) from None
    return manifest.raise_problems(config.skip_bad)


def run_folds(config, manifest: Manifest) -> list[Fold]:
    folds = manifest.folds if config.select == "valid" else select_on_test(manifest.folds)
    try:
        return pick_folds(folds, config.folds)
    except SerkdError as exc:
        raise ConfigError("folds", str(exc)) from None


def check_run_folder(out: Path, config) -> None:
    """A run folder holds one config: refuse to mix folds trained with settings that change results."""
    if not any(out.glob("*/" + RESULTS)):
        return  # nothing finished there (e.g. a run.json left by an interrupted start): never blocks
    try:
        previous = read_json(out / RUN_FILE).get("config", {})
    except (OSError, ValueError):
        return
    current = config.hashed_dict()
    changed = sorted(k for k, v in current.items() if k in previous and previous[k] != v)
    if changed:
        raise SerkdError(f"{out}: holds a run with another config ({', '.join(changed)} differ); choose another "
                         "run folder, or overwrite to start over")


def record_run(out: Path, config, data, role: str, features: dict | None = None, **extra) -> dict:
    """``config.yaml`` and ``run.json`` (folds merged with those other calls or processes trained)."""
    record = {
        "config": config.to_dict(), "role": role,
        "features": features or FeatureConfig(config.features, config.crop_length).to_json(),
        "labels": data.manifest.labels, "data_hash": data.data_hash, "corpus_counts": data.manifest.counts(),
        # a kind without a device (the eGeMAPS teacher: scikit-learn) runs on the CPU
        "device": str(pick_device(getattr(config, "device", "cpu"))), "provenance": provenance(), **extra,
    }
    atomic_write_text(out / CONFIG_FILE, config.to_yaml())
    with locked(out / ".run.lock"):
        previous = read_json(out / RUN_FILE).get("folds", []) if (out / RUN_FILE).is_file() else []
        merged = {f["name"]: f for f in previous}
        merged.update({f.name: f.to_json() for f in data.folds})
        record["folds"] = list(merged.values())
        atomic_write_json(out / RUN_FILE, record)
    return record


def clear_run(out: Path) -> None:
    """Start a run folder over: its records and fold folders go, anything else in it stays."""
    for name in (RUN_FILE, CONFIG_FILE, "tensorboard", FINAL):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for results in out.glob("*/" + RESULTS):
        shutil.rmtree(results.parent)


def check_fold(manifest: Manifest, fold: Fold, parts: dict[str, np.ndarray], emit: Emitter) -> list[str]:
    """Refuse a fold that cannot be trained or selected; return the classes absent from its test set."""
    labels = manifest.labels
    targets = manifest.label_ids()
    missing_train = [labels[c] for c in range(len(labels)) if not np.any(targets[parts["train"]] == c)]
    if missing_train:
        raise SerkdError(f"fold {fold.name}: class(es) {', '.join(missing_train)} absent from the training speakers")
    if len(parts["test"]) == 0:
        raise SerkdError(f"fold {fold.name}: no test utterances of speaker(s) {', '.join(fold.test)}")
    absent_test = [labels[c] for c in range(len(labels)) if not np.any(targets[parts["test"]] == c)]
    if absent_test:
        emit.note(f"fold {fold.name}: class(es) {', '.join(absent_test)} absent from the test set; UA is over the "
                  "classes present", fold.name)
    if len(parts["valid"]) == 0:
        raise SerkdError(f"fold {fold.name}: no validation utterances")
    return absent_test


def fold_key(identity: dict) -> str:
    """Identity of what a fold's result came from (config fields that change results, fold, features,
    labels, teacher): same key + same data hash = the finished result is reused, not retrained."""
    return teacher_outputs.config_hash(identity)


def cached_result(fold_dir: Path, key: str, data_hash: str) -> FoldResult | None:
    """The fold's finished result when it came from the same config and data, else None (train it)."""
    path = Path(fold_dir) / RESULTS
    if not path.is_file():
        return None
    try:
        result = FoldResult.from_json(read_json(path))
    except (OSError, ValueError, TypeError):
        return None  # a damaged result is retrained, never trusted
    return result if result.config_hash == key and result.data_hash == data_hash else None


def marks(fold: Fold, leaked: bool = False, stale: bool = False) -> list[str]:
    return ([MARK_TEST_SELECTED] if fold.selection == "test" else []) + (
        [MARK_LEAKY_TEACHER] if leaked else []) + ([MARK_STALE_TEACHER] if stale else [])


def score(targets: np.ndarray, predictions: np.ndarray, num_classes: int) -> dict:
    wa, ua = wa_ua(targets, predictions)
    return {"wa": wa, "ua": ua, "confusion": confusion(targets, predictions, num_classes)}


def base_result(manifest: Manifest, fold: Fold, parts: dict[str, np.ndarray], test_predictions: np.ndarray,
                absent_test: list[str], **fields) -> FoldResult:
    """A FoldResult with the fold's split, sizes and test scores filled in; ``fields`` add the rest."""
    targets = manifest.label_ids()
    return FoldResult(
        fold=fold.name, test=list(fold.test), valid=list(fold.valid), labels=list(manifest.labels),
        corpus=manifest.corpus, selection=fold.selection, n_train=len(parts["train"]), n_valid=len(parts["valid"]),
        n_test=len(parts["test"]), absent_test_classes=absent_test,
        **score(targets[parts["test"]], test_predictions, len(manifest.labels)), **fields)


def write_result(fold_dir: Path, result: FoldResult) -> None:
    atomic_write_json(Path(fold_dir) / RESULTS, result.to_json())


def teacher_meta(fold: Fold, manifest: Manifest, config, data_hash: str, key: str, best: dict, **fields) -> dict:
    """What a trained teacher's outputs record so a student can trust (or refuse) them."""
    return {
        "provenance": "trained", "fold_clean": fold.selection == "valid", "train_speakers": list(fold.train),
        "valid_speakers": list(fold.valid), "test_speakers": list(fold.test), "labels": list(manifest.labels),
        "corpus": manifest.corpus, "root": str(Path(config.root).resolve()), "corpus_options": config.corpus_options,
        "data_hash": data_hash, "config_hash": key,
        "audio_sha1": list(teacher_outputs.utterance_hashes(manifest).values()),
        "valid_wa": best["valid_wa"], "valid_ua": best["valid_ua"], "selection": fold.selection, **fields,
    }


def done_line(result: FoldResult, what: str = "", chosen: str | None = None) -> str:
    """``spk00: test WA 62.50  UA 58.33  (best epoch 3 on validation UA, 1.2 s)``; ``chosen`` says what was
    selected when it is not an epoch (``C=0.1``)."""
    on = "test" if result.selection == "test" else "validation"
    chosen = chosen or f"best epoch {result.best_epoch}"
    return (f"{result.fold}: {what}test WA {100 * result.wa:.2f}  UA {100 * result.ua:.2f}  ({chosen} on {on} UA, "
            f"{result.train_seconds or 0:.1f} s)")


# ---------------------------------------------------------------------- the per-fold skeleton
@dataclass
class FoldSplit:
    """A checked fold: its utterance indices (``train``/``valid``/``test``), the classes its test set lacks,
    and the key its result is recorded under."""

    fold: Fold
    parts: dict[str, np.ndarray]
    absent_test: list[str]
    key: str


class FoldJob(ABC):
    """One fold of one kind of training, as :func:`run_fold` drives it: a student, or any teacher kind.

    ``out`` is the run folder or teacher store (the fold's files go to ``out/<fold>/``), ``manifest`` and
    ``data_hash`` the corpus it trains on.
    """

    def __init__(self, fold: Fold, out: Path, manifest: Manifest, data_hash: str, tensorboard: bool = False):
        self.fold, self.out, self.manifest, self.data_hash = fold, Path(out), manifest, data_hash
        self.tensorboard = tensorboard

    @property
    def folder(self) -> Path:
        return self.out / self.fold.name

    @abstractmethod
    def identity(self) -> dict:
        """What the fold's result comes from (config fields that change results, fold, labels, teacher...):
        its hash is the fold key; same key and data hash = the finished result is reused."""

    def outputs_cached(self, key: str) -> bool:
        """Whether what the job writes beside ``results.json`` is there for ``key`` too (a teacher's outputs)."""
        return True

    @abstractmethod
    def train(self, split: FoldSplit) -> FoldResult:
        """Fit, write what the fold produces (a checkpoint, teacher outputs) and return its result (not yet
        written: the skeleton writes it last, so a fold without ``results.json`` is never taken as done)."""

    def done_line(self, result: FoldResult) -> str:
        return done_line(result)


def run_fold(job: FoldJob, emit: Emitter, overwrite: bool = False) -> FoldResult:
    """The one per-fold skeleton: check the fold, key it, reuse a finished result of the same key and data
    (``overwrite``: train again), else train, write the result and emit it."""
    fold = job.fold
    parts = fold_indices(job.manifest, fold)
    absent_test = check_fold(job.manifest, fold, parts, emit)
    key = fold_key(job.identity())
    cached = None if overwrite else cached_result(job.folder, key, job.data_hash)
    if cached and job.outputs_cached(key):
        emit.info(f"fold {fold.name}: cached (same config and data)", fold.name)
        emit(Event("fold_done", fold=fold.name, data={"result": cached, "cached": True}))
        return cached
    result = job.train(FoldSplit(fold, parts, absent_test, key))
    if job.tensorboard:
        write_curves(job.out / "tensorboard" / fold.name, result.to_json(), step=0)
    write_result(job.folder, result)
    emit.info(job.done_line(result), fold.name)
    emit(Event("fold_done", fold=fold.name, data={"result": result, "cached": False}))
    return result
