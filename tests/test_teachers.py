"""Teacher kinds behind one interface: each kind fits, saves, loads and labels audio outside its corpus; a kind
registered in this file runs through the per-fold skeleton and the CLI; fold keys of stores fitted before the
split are kept; the drivers import one way."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from safetensors.numpy import load_file, save_file

import serkd
from serkd.config import ConfigError, RunConfig, TeacherConfig, meta
from serkd.data import teacher_outputs
from serkd.data.audio import load_audio
from serkd.data.corpora import load_corpus
from serkd.data.features import per_utterance
from serkd.data.protocol import Fold, fold_indices
from serkd.data.teacher_outputs import TeacherOutputs
from serkd.io import read_json
from serkd.train import fold as shared
from serkd.train.events import Emitter
from serkd.train.metrics import wa_ua
from serkd.train.teachers import (
    TEACHERS,
    Fit,
    FoldTeacher,
    TeacherCorpus,
    TeacherKind,
    kind_for,
    load_teacher,
    register,
    teacher_kind,
    train_teacher,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_wavlm(tmp_path_factory):
    from serkd.models.wavlm_teacher import write_tiny

    return write_tiny(tmp_path_factory.mktemp("tiny-wavlm"))


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> list[Path]:
    """Audio no teacher was fitted on: other voices, other lengths, no corpus around them."""
    from serkd.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("outside")
    generate(root, SynthConfig(speakers=3, per_class=1, seed=7, min_seconds=0.3, max_seconds=1.4))
    return sorted((root / "wav").rglob("*.wav"))[:5]


def _kind_config(kind: str, tiny_synth: Path, out: Path, tiny_wavlm: Path) -> TeacherConfig:
    common = {"corpus": "synth", "root": str(tiny_synth), "out": str(out), "folds": "0"}
    options = {"cnn": {"model": "lightsernet", "epochs": 1, "length": 8000},
               "egemaps": {"model": "egemaps", "c_grid": "0.1,1"},
               "wavlm": {"model": str(tiny_wavlm), "epochs": 1, "length": 8000, "batch_size": 4}}[kind]
    return TeacherConfig(**common, **options)


@pytest.mark.parametrize("kind", ["cnn", "egemaps", "wavlm"])
def test_each_kind_fits_saves_loads_and_labels_any_audio(kind, tiny_synth, tiny_wavlm, outside, tmp_path):
    if kind == "egemaps":
        pytest.importorskip("opensmile")
    config = _kind_config(kind, tiny_synth, tmp_path / "store", tiny_wavlm)
    assert teacher_kind(config) == kind and type(config) is kind_for(config.model).Config
    fitter = kind_for(config.model)(config, Emitter())
    corpus = fitter.read_corpus()
    fold = corpus.folds[0]
    parts = fold_indices(corpus.manifest, fold)
    fit = fitter.fit(corpus, fold, parts)
    fitted = fit.teacher
    assert fitted.labels == corpus.manifest.labels and 0 <= fit.best["valid_ua"] <= 1
    fitted.save(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "teacher.json").read_text())["kind"] == kind
    assert not list((tmp_path / "saved").rglob("*.pkl")) and not list((tmp_path / "saved").rglob("*.bin"))
    loaded = load_teacher(tmp_path / "saved", device="cpu")
    assert type(loaded) is type(fitted) and loaded.labels == fitted.labels and loaded.display == fitted.display

    # audio outside the corpus (and a file that is no audio, left out with skip_bad): the same outputs
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not a wave file at all")
    mine, theirs = fitted.predict([*outside, broken], skip_bad=True), loaded.predict([*outside, broken], skip_bad=True)
    assert mine.utt_ids == theirs.utt_ids == [str(p) for p in outside]
    assert mine.logits.shape == (len(outside), 4) and np.isfinite(mine.logits).all()
    assert np.array_equal(mine.logits, theirs.logits) and np.array_equal(mine.embeddings, theirs.embeddings)
    expected = {"cnn": 2, "egemaps": 2, "wavlm": 3}[kind]  # [N, D], or one [N, L, D] vector per layer
    assert mine.embeddings.ndim == expected and len(mine.embeddings) == len(outside)
    if kind == "wavlm":
        assert mine.embeddings.dtype == np.float16 and np.array_equal(mine.pooled, theirs.pooled)
    with pytest.raises(serkd.errors.SerkdError, match=r"broken\.wav"):
        loaded.predict([*outside, broken])
    # the corpus itself, read again from its files: exactly what the store keeps for it
    stored = fitter.corpus_outputs(fit, corpus, parts)
    again = loaded.predict(load_corpus("synth", tiny_synth))
    assert again.utt_ids == stored.utt_ids and np.array_equal(again.logits, stored.logits)


# ---------------------------------------------------------------------- a kind registered here
@dataclass(kw_only=True)
class ToyConfig(TeacherConfig):
    smoothing: float = field(default=1.0, metadata=meta("add-k smoothing of the class counts"))


def _lengths(manifest, skip_bad: bool = False):
    rows, kept = per_utterance(manifest, lambda u: float(len(load_audio(u.path))), skip_bad)
    return np.array(rows), kept


class ToyTeacher(FoldTeacher):
    """The training class prior, nudged by each utterance's length: a teacher in a dozen lines."""

    display = "toy-prior"

    def __init__(self, log_prior: np.ndarray, labels):
        self.log_prior, self.labels = log_prior, list(labels)

    def read_inputs(self, manifest, skip_bad=False, emit=None):
        return _lengths(manifest, skip_bad)

    def predict_inputs(self, inputs, utt_ids) -> TeacherOutputs:
        logits = (self.log_prior[None, :] + 1e-5 * inputs[:, None] * np.arange(len(self.labels))).astype(np.float32)
        return TeacherOutputs(list(utt_ids), logits, {"embedding_dim": 1}, (inputs[:, None] / 16000).astype(np.float32))

    def save_weights(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"log_prior": self.log_prior}, str(folder / "toy.safetensors"))

    @classmethod
    def load(cls, folder: Path, state: dict, device: str = "auto") -> ToyTeacher:
        return cls(load_file(str(folder / "toy.safetensors"))["log_prior"], state["labels"])


class ToyKind(TeacherKind):
    Config = ToyConfig
    Teacher = ToyTeacher
    title = "toy teachers"
    fits = 0

    @classmethod
    def claims(cls, model: str) -> bool:
        return model == "toy"

    def read_corpus(self) -> TeacherCorpus:
        manifest = shared.load_manifest(self.config)
        lengths, manifest = _lengths(manifest)
        return TeacherCorpus(manifest, shared.run_folds(self.config, manifest), manifest.data_hash(), lengths,
                             {"kind": "length"}, "length")

    def identity(self, fold: Fold, labels: list[str]) -> dict:
        return {"config": self.config.hashed_dict(), "fold": fold.to_json(), "labels": labels}

    def fit(self, corpus: TeacherCorpus, fold: Fold, parts) -> Fit:
        ToyKind.fits += 1
        targets = corpus.manifest.label_ids()
        counts = np.bincount(targets[parts["train"]], minlength=len(corpus.manifest.labels)) + self.config.smoothing
        teacher = ToyTeacher(np.log(counts / counts.sum()).astype(np.float32), corpus.manifest.labels)
        valid = teacher.predict_inputs(corpus.inputs[parts["valid"]], []).logits.argmax(axis=1)
        valid_wa, valid_ua = wa_ua(targets[parts["valid"]], valid)
        best = {"valid_wa": valid_wa, "valid_ua": valid_ua}
        return Fit(teacher, [best], best, 0.0, chosen=f"smoothing={self.config.smoothing:g}")


@pytest.fixture
def toy_kind():
    register("toy")(ToyKind)
    yield ToyKind
    TEACHERS.unregister("toy")


def test_a_kind_registered_in_one_file_runs_through_the_skeleton(toy_kind, tiny_synth, outside, tmp_path, capsys):
    store = tmp_path / "toy"
    config = TeacherConfig(model="toy", corpus="synth", root=str(tiny_synth), out=str(store), folds="0,1",
                           smoothing=2.0)
    assert isinstance(config, ToyConfig) and teacher_kind(config) == "toy"
    with pytest.raises(ConfigError, match=r"^smoothing: applies to toy teachers only, not 'lightsernet'"):
        TeacherConfig(model="lightsernet", smoothing=2.0)
    with pytest.raises(ConfigError, match=r"^epochs: applies to CNN teachers and WavLM teachers only, not 'toy'"):
        TeacherConfig.from_dict({"model": "toy", "epochs": 3})
    events = []
    results = train_teacher(config, events.append)
    manifest = load_corpus("synth", tiny_synth)
    assert [r.fold for r in results] == ["spk00", "spk01"] and ToyKind.fits == 2
    for result in results:
        saved = read_json(store / result.fold / "results.json")
        assert (saved["role"], saved["method"], saved["student"], saved["features"]) == (
            "teacher", "teacher", "toy-prior", "length")
        outputs = teacher_outputs.read_fold(store, result.fold)
        fold = next(f for f in manifest.folds if f.name == result.fold)
        assert outputs.utt_ids == [u.utt_id for u in manifest.utterances] and outputs.embeddings.shape == (48, 1)
        assert outputs.meta["train_speakers"] == list(fold.train) and outputs.meta["fold_clean"] is True
        # the teacher saw its training speakers only: the prior of their labels, add-2 smoothed
        counts = np.bincount(manifest.label_ids()[fold_indices(manifest, fold)["train"]], minlength=4) + 2.0
        lengths = np.array([len(load_audio(u.path)) for u in manifest.utterances], dtype=float)
        expected = np.log(counts / counts.sum())[None, :] + 1e-5 * lengths[:, None] * np.arange(4)
        assert np.allclose(outputs.logits, expected, atol=1e-5)
        assert read_json(store / result.fold / "teacher.json")["kind"] == "toy"
    assert any("(smoothing=2 on validation UA" in e.message for e in events if e.kind == "info")
    assert read_json(store / "run.json")["role"] == "teacher"
    assert TeacherConfig.from_yaml(store / "config.yaml") == config  # the store's config repeats the run
    # a rerun fits nothing; a fitted fold teacher labels audio outside the corpus
    assert [r.ua for r in train_teacher(config)] == [r.ua for r in results] and ToyKind.fits == 2
    labelled = load_teacher(store / "spk00").predict(outside)
    assert labelled.logits.shape == (len(outside), 4) and labelled.utt_ids == [str(p) for p in outside]
    # students distil from it like from any store; the CLI has its flag
    from serkd.train.run import run

    (student,) = run(RunConfig(corpus="synth", root=str(tiny_synth), folds="0", epochs=1, length=8000, method="kd",
                               teacher=str(store), out=str(tmp_path / "kd")))
    assert student.teacher == str(store) and not student.marks
    code, out, _ = run_cli(["teacher", "train", "--model", "toy", "--smoothing", "3", "--corpus", "synth", "--root",
                            tiny_synth, "--out", store, "--print-config"], capsys)
    assert code == 0 and "smoothing: 3.0" in out and "epochs" not in out


def test_fold_keys_of_stores_fitted_before_the_split_are_kept(monkeypatch):
    """Keys computed by the single TeacherConfig of every kind (commit 62aa3d3): such folds are reused."""
    from serkd.models import wavlm_teacher
    from serkd.train.student import student_identity
    from serkd.train.teachers import egemaps

    fold = Fold("spk00", ("spk00",), ("spk01",), ("spk02", "spk03"))
    labels = ["anger", "happiness", "neutral", "sadness"]

    def key(config, revision="rev123"):
        monkeypatch.setattr(wavlm_teacher, "resolve", lambda *a: wavlm_teacher.ResolvedModel("m", "m", revision))
        return shared.fold_key(kind_for(config.model)(config, Emitter()).identity(fold, labels))

    monkeypatch.setattr(egemaps, "feature_set", lambda: {"feature_set": "eGeMAPSv02", "fixed": True})
    assert key(TeacherConfig(model="x/wavlm-tiny", corpus="synth", root="r", out="o", length=16000, epochs=10,
                             batch_size=4, grad_accum=2, lr=3e-3, head_lr=3e-3, freeze_feature_encoder=False),
               "local-abc") == "7ded6530ed114911"
    assert key(TeacherConfig(model="microsoft/wavlm-base-plus", corpus="emodb", root="r", out="o", length=80000,
                             epochs=20, batch_size=8, lr=5e-5, threads=1)) == "5f5cd3f405340624"
    base_plus = TeacherConfig(model="microsoft/wavlm-base-plus", corpus="emodb", root="r", out="o")
    assert key(base_plus) == "75f27478a856a412"
    assert key(TeacherConfig(model="egemaps", corpus="synth", root="r", out="o", c_grid="0.01,1")) == "4730af7a21aff3ab"
    assert key(TeacherConfig(model="egemaps", corpus="synth", root="r", out="o", crossfit=True, seed=3)) == \
        "5e11fbe6cb7ff727"
    cnn = TeacherConfig(model="lightsernet", corpus="synth", root="r", out="o", length=8000, epochs=1, seed=5)
    assert key(cnn) == shared.fold_key(student_identity(cnn.student_config(), fold, labels, None)) == \
        "d202b5cbc432edbb"
    timm = TeacherConfig(model="resnet18", corpus="synth", root="r", out="o", student_params={"drop_rate": 0.1})
    assert shared.fold_key(student_identity(timm.student_config().resolved(), fold, labels, None)) == \
        "b3ef64cceee54b55"
    strong = RunConfig(corpus="synth", root="r", out="o", length=8000, epochs=2, method="kd", teacher="t",
                       recipe="strong").resolved()
    assert shared.fold_key(student_identity(strong, fold, labels, None)) == "a11b5b5642c6239e"


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_drivers_import_one_way():
    train = Path(serkd.__file__).parent / "train"
    final, student, run = _imports(train / "final.py"), _imports(train / "student.py"), _imports(train / "run.py")
    assert "serkd.train.run" not in final and "serkd.train.run" not in student  # nothing imports the workflow
    assert "serkd.train.final" not in student  # the student driver knows nothing of the final model
    assert {"serkd.train.student", "serkd.train.final"} <= run
    for path in (train / "teachers").glob("*.py"):  # teacher kinds never import the student workflow either
        assert not {"serkd.train.run", "serkd.train.final"} & _imports(path), path.name
    assert "serkd.train.teachers" not in student | final | _imports(train / "fold.py")
