"""Teacher kinds behind one interface, each fitted per fold by the one per-fold skeleton (``train/fold.py``).

    results = train_teacher(TeacherConfig(model="egemaps", corpus="synth", root="data/synth", out="teachers/eg"))
    teacher = load_teacher("teachers/eg/spk00")                  # a fitted fold teacher, from its store folder
    outputs = teacher.predict(["clips/a.wav", "clips/b.wav"])     # any audio: TeacherOutputs (logits, embeddings)

A kind is one file in this folder: its config class (a :class:`~serkd.config.TeacherConfig` subclass),
a :class:`FoldTeacher` (a fitted fold teacher) and a :class:`TeacherKind` (how one is fitted on a fold),
registered together with :func:`register`::

    @register("mykind")
    class MyKind(TeacherKind):
        Config = MyTeacherConfig
        Teacher = MyFoldTeacher
        title = "my teachers"

        @classmethod
        def claims(cls, model): return model == "mykind"
        def read_corpus(self) -> TeacherCorpus: ...        # the corpus' inputs, once per run
        def identity(self, fold, labels) -> dict: ...      # what the fold key hashes
        def fit(self, corpus, fold, parts) -> Fit: ...     # a fitted FoldTeacher and how it was selected

Nothing else is edited: ``TeacherConfig(model=...)``, ``serkd teacher train`` (its flags come from the
kinds' config fields), the grid and :func:`load_teacher` find the kind here. The kinds shipped:
``cnn`` (any student or timm model trained from scratch on features: the kind of every model name no
other kind claims), ``wavlm`` (a transformers checkpoint fine-tuned on waveforms), ``egemaps``
(openSMILE functionals + logistic regression).

Store layout (``OUT``): per fold ``<fold>/outputs.{safetensors,json}`` (the teacher outputs store,
``data/teacher_outputs.py``: outputs for every utterance of the corpus), ``<fold>/results.json`` (a
:class:`~serkd.train.results.FoldResult`: ``serkd report OUT`` shows the teacher) and the fitted teacher
itself (``<fold>/teacher.json`` + the kind's safetensors), so it can label audio it never saw.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from serkd.config import ConfigError, TeacherConfig
from serkd.data import teacher_outputs
from serkd.data.manifest import Manifest, Utterance
from serkd.data.protocol import Fold
from serkd.data.teacher_outputs import TeacherOutputs
from serkd.errors import SerkdError
from serkd.io import atomic_write_json, read_json
from serkd.registry import Registry, import_submodules
from serkd.train import fold as shared
from serkd.train.events import Emitter, OnEvent
from serkd.train.provenance import provenance
from serkd.train.results import FoldResult
from serkd.train.threads import use_threads

TEACHER_FILE = "teacher.json"  # beside a fold's outputs: which kind, and what rebuilds the fitted teacher

TEACHERS: Registry[type[TeacherKind]] = Registry("teacher kind")


def register(name: str):
    """Class decorator: add a :class:`TeacherKind` (with its ``Config`` and ``Teacher``) under ``name``."""

    def wrap(kind: type[TeacherKind]) -> type[TeacherKind]:
        kind.name = kind.Teacher.kind = kind.Config.teacher_kind = name
        return TEACHERS.register(name)(kind)

    return wrap


def available() -> list[str]:
    return TEACHERS.available()


def kinds() -> list[type[TeacherKind]]:
    return [TEACHERS.get(name) for name in TEACHERS.available()]


def kind_for(model: str) -> type[TeacherKind]:
    """The kind ``model`` names: the one that claims it, else the fallback (a student or timm name: CNN)."""
    model = str(model or "")
    claimed = [k for k in kinds() if not k.fallback and k.claims(model)]
    if claimed:
        return claimed[0]
    fallback = [k for k in kinds() if k.fallback]
    if not fallback:
        raise ConfigError("model", f"no teacher kind takes {model!r} (kinds: {', '.join(available())})")
    return fallback[0]


def config_class(model: str, values: dict) -> type[TeacherConfig]:
    """The config class of ``model``'s kind; a field of ``values`` that only other kinds have is refused in
    one line naming it (``grad_accum: applies to WavLM teachers only, not 'resnet18' (CNN teachers)``)."""
    if not model:
        raise ConfigError("model", "required")
    kind = kind_for(model)
    own = set(kind.Config.field_names())
    for name in values:
        if name in own:
            continue
        owners = [k.title for k in kinds() if name in k.Config.field_names()]
        if owners:
            raise ConfigError(name, f"applies to {' and '.join(owners)} only, not {model!r} ({kind.title})")
    return kind.Config


def teacher_kind(config: TeacherConfig) -> str:
    """The registered kind of a teacher config (``cnn``, ``wavlm``, ``egemaps``...)."""
    return kind_for(config.model).name


# ---------------------------------------------------------------------- the interface
@dataclass
class TeacherCorpus:
    """A teacher run's corpus: what the kind reads per utterance, once, for every fold."""

    manifest: Manifest
    folds: list[Fold]
    data_hash: str
    inputs: Any  # what FoldTeacher.predict_inputs takes, rows as the manifest (features, waveforms...)
    features: dict  # what the inputs are: run.json's and the store's "features"
    input_name: str  # the FoldResult's "features" (mel, waveform, egemaps)


class FoldTeacher(ABC):
    """A fitted fold teacher: logits and embeddings for any audio; saved to and loaded from its fold folder.

    ``labels`` are its classes (the logits' columns), ``display`` its name in tables.
    """

    kind: ClassVar[str] = ""  # set by register
    labels: list[str]
    display: str

    @abstractmethod
    def read_inputs(self, manifest: Manifest, skip_bad: bool = False,
                    emit: Emitter | None = None) -> tuple[Any, Manifest]:
        """The inputs of every utterance of ``manifest`` through the kind's cache (features, waveforms,
        functionals) and the manifest of the utterances read (bad audio: failing, or dropped with ``skip_bad``)."""

    @abstractmethod
    def predict_inputs(self, inputs: Any, utt_ids: Sequence[str]) -> TeacherOutputs:
        """Outputs for inputs read by :meth:`read_inputs` (rows: ``utt_ids``); ``meta`` describes the
        embeddings (``embedding_dim``...)."""

    def predict(self, utterances: Manifest | Sequence[Utterance | str | Path], skip_bad: bool = False,
                on_event: OnEvent | None = None) -> TeacherOutputs:
        """Logits [N, C] and embeddings (None, [N, D] or [N, L, D]) for any audio files, in their order
        (files that cannot be read: an error naming them, or left out with ``skip_bad``)."""
        manifest = audio_manifest(utterances, self.labels)
        inputs, kept = self.read_inputs(manifest, skip_bad, Emitter(on_event))
        return self.predict_inputs(inputs, [u.utt_id for u in kept.utterances])

    def save(self, folder: str | Path) -> None:
        """Write ``folder/teacher.json`` (the kind and :meth:`state`) and the kind's weights (:meth:`save_weights`)."""
        folder = Path(folder)
        self.save_weights(folder)
        atomic_write_json(folder / TEACHER_FILE, {"kind": self.kind, "labels": list(self.labels),
                                                  "display": self.display, **self.state()})

    def state(self) -> dict:
        """JSON values the kind needs to rebuild and run the teacher (beside its weights)."""
        return {}

    @abstractmethod
    def save_weights(self, folder: Path) -> None:
        """The fitted parameters, as safetensors (+ JSON): never a pickle."""

    @classmethod
    @abstractmethod
    def load(cls, folder: Path, state: dict, device: str = "auto") -> FoldTeacher:
        """The teacher :meth:`save` wrote (``state``: its ``teacher.json``)."""


@dataclass
class Fit:
    """A teacher fitted on one fold and how it was chosen (what the fold's result and outputs record)."""

    teacher: FoldTeacher
    history: list[dict]  # per epoch (or per value tried), each with valid_wa and valid_ua
    best: dict  # the history row kept
    seconds: float
    best_epoch: int | None = None
    epochs: int | None = None
    extra: dict = field(default_factory=dict)  # kind-specific FoldResult fields (model_id, C...)
    meta: dict = field(default_factory=dict)  # kind-specific store metadata
    chosen: str | None = None  # what was selected when not an epoch (the done line: "C=0.1")
    test_predictions: np.ndarray | None = None  # when not the argmax of the corpus outputs' test rows
    inputs: Any = None  # the corpus' inputs as this fold's teacher saw them (normalised per fold), else corpus.inputs


class TeacherKind(ABC):
    """How one kind of teacher is configured and fitted per fold: one instance per teacher run.

    ``__init__`` runs the checks that need no data (a WavLM checkpoint is found before any audio is read).
    """

    name: ClassVar[str] = ""  # set by register
    Config: ClassVar[type[TeacherConfig]]
    Teacher: ClassVar[type[FoldTeacher]]
    title: ClassVar[str]  # for messages: "WavLM teachers"
    fallback: ClassVar[bool] = False  # the kind of every model name no other kind claims

    def __init__(self, config: TeacherConfig, emit: Emitter):
        self.config, self.emit = config, emit

    @classmethod
    def claims(cls, model: str) -> bool:
        """Whether ``model`` names a teacher of this kind."""
        return False

    def record(self) -> dict:
        """What ``run.json`` records beside the config (the model, its revision...)."""
        return {"model": self.config.model}

    @abstractmethod
    def read_corpus(self) -> TeacherCorpus:
        """The corpus, its folds and every utterance's inputs (bad audio: failing or dropped with ``skip_bad``)."""

    @abstractmethod
    def identity(self, fold: Fold, labels: list[str]) -> dict:
        """What a fold's outputs come from: its hash is the fold key (same key and data: reused)."""

    @abstractmethod
    def fit(self, corpus: TeacherCorpus, fold: Fold, parts: dict[str, np.ndarray]) -> Fit:
        """Fit on ``parts['train']`` only (selecting on ``parts['valid']``, never seeing ``parts['test']``)."""

    def corpus_outputs(self, fit: Fit, corpus: TeacherCorpus, parts: dict[str, np.ndarray]) -> TeacherOutputs:
        """What the store keeps for the fold: the fitted teacher's outputs for every utterance of the corpus."""
        inputs = corpus.inputs if fit.inputs is None else fit.inputs
        return fit.teacher.predict_inputs(inputs, [u.utt_id for u in corpus.manifest.utterances])


def audio_manifest(utterances: Manifest | Sequence[Utterance | str | Path], labels: Sequence[str]) -> Manifest:
    """Any audio as a manifest to read: a manifest as it is, utterances, or files (id = the path given)."""
    if isinstance(utterances, Manifest):
        return utterances
    rows = [u if isinstance(u, Utterance) else Utterance(str(u), Path(u), "", "") for u in utterances]
    root = Path(rows[0].path).parent if rows else Path(".")
    return Manifest("audio", root, list(labels), rows)


def load_teacher(fold_dir: str | Path, device: str = "auto") -> FoldTeacher:
    """The fitted teacher saved in a store's fold folder (``OUT/<fold>``), of whichever kind."""
    fold_dir = Path(fold_dir)
    if (fold_dir / TEACHER_FILE).is_file():
        state = read_json(fold_dir / TEACHER_FILE)
    elif (fold_dir / "checkpoint.json").is_file():  # CNN teachers saved before teacher.json existed
        state = {"kind": "cnn"}
    else:
        raise SerkdError(f"{fold_dir}: no fitted teacher saved there (stores written before serkd saved fold "
                         "teachers hold outputs only: train the teacher again with overwrite)")
    try:
        kind = TEACHERS.get(state.get("kind", ""))
    except ValueError as exc:
        raise SerkdError(f"{fold_dir / TEACHER_FILE}: {exc}") from None
    return kind.Teacher.load(fold_dir, state, device)


# ---------------------------------------------------------------------- the driver
class TeacherJob(shared.FoldJob):
    """One fold of any teacher kind for :func:`serkd.train.fold.run_fold`: fit, then write the outputs for
    every utterance, the fitted teacher and the result."""

    def __init__(self, kind: TeacherKind, corpus: TeacherCorpus, fold: Fold, out: Path):
        super().__init__(fold, out, corpus.manifest, corpus.data_hash, getattr(kind.config, "tensorboard", False))
        self.kind, self.corpus, self.config = kind, corpus, kind.config
        self.chosen: str | None = None

    def identity(self) -> dict:
        return self.kind.identity(self.fold, self.manifest.labels)

    def outputs_cached(self, key: str) -> bool:
        return teacher_outputs.cached(self.out, self.fold.name, key, self.data_hash) is not None

    def train(self, split: shared.FoldSplit) -> FoldResult:
        fold, parts = self.fold, split.parts
        fit = self.kind.fit(self.corpus, fold, parts)
        outputs = self.kind.corpus_outputs(fit, self.corpus, parts)
        git_commit = provenance()["git_commit"]
        epoch = {"best_epoch": fit.best_epoch} if fit.best_epoch is not None else {}
        meta = shared.teacher_meta(fold, self.manifest, self.config, self.data_hash, split.key, fit.best,
                                   teacher=fit.teacher.display, **epoch, features=self.corpus.features,
                                   git_commit=git_commit, **outputs.meta, **fit.meta)
        teacher_outputs.write_outputs(self.out, fold.name, replace(outputs, meta=meta))
        fit.teacher.save(self.folder)
        test_predictions = (fit.test_predictions if fit.test_predictions is not None
                            else outputs.logits[parts["test"]].argmax(axis=1))
        self.chosen = fit.chosen
        return shared.base_result(
            self.manifest, fold, parts, test_predictions, split.absent_test, student=fit.teacher.display,
            method="teacher", features=self.corpus.input_name, role="teacher", valid_wa=fit.best["valid_wa"],
            valid_ua=fit.best["valid_ua"], best_epoch=fit.best_epoch, epochs=fit.epochs, marks=shared.marks(fold),
            seed=self.config.seed, data_hash=self.data_hash, config_hash=split.key, git_commit=git_commit,
            train_seconds=round(fit.seconds, 2), history=fit.history, extra=fit.extra)

    def done_line(self, result: FoldResult) -> str:
        return shared.done_line(result, "teacher ", self.chosen)


def train_teacher(config: TeacherConfig, on_event: OnEvent | None = None, overwrite: bool = False) -> list[FoldResult]:
    """Fit (or reuse) the teacher of every chosen fold into the store ``config.out``; return the results.

    No run-folder config check: each fold's outputs carry their own config hash, so one store may hold
    folds fitted with different settings (a fold fitted again with another config replaces only itself).
    """
    config.validate()
    kind_class = kind_for(config.model)
    if not isinstance(config, kind_class.Config):
        raise ConfigError("model", f"{config.model!r} is a {kind_class.name} teacher; build its config with "
                                   f"TeacherConfig(model=...) (got a {type(config).__name__})")
    emit = Emitter(on_event)
    out = Path(config.out)
    if overwrite:
        shared.clear_run(out)
    kind = kind_class(config, emit)
    use_threads(config.threads, emit)  # unset: one per physical core of this process' share; warns if oversubscribed
    corpus = kind.read_corpus()
    shared.record_run(out, config, corpus, role="teacher", features=corpus.features, **kind.record())
    return [shared.run_fold(TeacherJob(kind, corpus, fold, out), emit, overwrite) for fold in corpus.folds]


import_submodules(__name__, __path__)
