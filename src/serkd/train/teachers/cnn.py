"""CNN teachers: any registered student or timm model trained from scratch per fold on mel/MFCC features.

A CNN teacher is trained exactly as a CE student of the same model (``train/student.py``: the same
checks, features, seed, loop and selection; its fold key is that student's), then its logits and
penultimate embeddings for every utterance go to the store. The fitted model is saved as a student
checkpoint (``<fold>/model.safetensors`` + ``checkpoint.json``): ``serkd export`` takes it too, and
:meth:`CnnTeacher.predict` computes features for any audio through the feature cache.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from serkd.config import RunConfig, SpectrogramConfig, TeacherConfig
from serkd.data.features import FeatureConfig
from serkd.data.manifest import Manifest
from serkd.data.normalize import for_checkpoint
from serkd.data.protocol import Fold
from serkd.data.store import MappedFeatures, feature_store
from serkd.data.teacher_outputs import TeacherOutputs
from serkd.train import fold as shared
from serkd.train import student
from serkd.train.checkpoint import load_checkpoint, save_checkpoint
from serkd.train.events import Emitter
from serkd.train.loop import pick_device, predict_logits
from serkd.train.provenance import provenance
from serkd.train.teachers import Fit, FoldTeacher, TeacherCorpus, TeacherKind, register


@dataclass(kw_only=True)
class CnnTeacherConfig(TeacherConfig, SpectrogramConfig):
    """A registered student or timm model (``model``) trained per fold as a CE student, the seed's defaults."""

    def student_config(self) -> RunConfig:
        """The CE student this teacher is trained as (its fold key is that student's)."""
        own = {f.name: getattr(self, f.name) for f in fields(SpectrogramConfig)}
        return RunConfig(**own, student=self.model, method="ce")


class CnnTeacher(FoldTeacher):
    """A fitted CNN: logits and penultimate embeddings [N, D] of any audio's features."""

    def __init__(self, model: torch.nn.Module, checkpoint: dict, device: torch.device):
        self.model, self.checkpoint, self.device = model, checkpoint, device
        self.labels = list(checkpoint["labels"])
        self.display = checkpoint["model"]
        features = checkpoint["features"]
        self.feature_config = FeatureConfig(features["kind"], features["length"], features["sample_rate"])

    def read_inputs(self, manifest: Manifest, skip_bad: bool = False,
                    emit: Emitter | None = None) -> tuple[MappedFeatures, Manifest]:
        emit = emit or Emitter()
        advance = emit.task("features", f"features ({self.feature_config.kind})", len(manifest))
        features, kept, info = feature_store(manifest, self.feature_config, skip_bad, advance)
        emit.done("features")
        emit.info(info.line())
        # new audio seen as the model saw its training data: corpus statistics as recorded, a speaker's own...
        return for_checkpoint(self.checkpoint.get("normalization"), self.feature_config, features, kept), kept

    def predict_inputs(self, inputs: MappedFeatures, utt_ids) -> TeacherOutputs:
        logits, embeddings = predict_logits(self.model, inputs, np.arange(len(inputs)), self.device,
                                            with_embeddings=True)
        meta = {"embedding_dim": int(embeddings.shape[1]) if embeddings is not None else None}
        return TeacherOutputs(list(utt_ids), logits, meta, embeddings)

    def save_weights(self, folder: Path) -> None:
        save_checkpoint(folder, self.model, self.checkpoint)

    @classmethod
    def load(cls, folder: Path, state: dict, device: str = "auto") -> CnnTeacher:
        where = pick_device(device)
        model, checkpoint = load_checkpoint(folder)
        return cls(model.to(where), checkpoint, where)


@register("cnn")
class CnnKind(TeacherKind):
    Config = CnnTeacherConfig
    Teacher = CnnTeacher
    title = "CNN teachers"
    fallback = True  # any model name no other kind claims: a registered student or a timm model

    def __init__(self, config: CnnTeacherConfig, emit: Emitter):
        super().__init__(config, emit)
        self.student = config.student_config().resolved()
        self.student.validate()
        student.check_student(self.student)
        self.data: student.PreparedData | None = None

    def read_corpus(self) -> TeacherCorpus:
        config = self.student
        manifest = shared.load_manifest(config)
        folds = shared.run_folds(config, manifest)
        feature_config = FeatureConfig(config.features, config.crop_length)
        student.check_input_size(config.student, config.model_options(), feature_config, len(manifest.labels))
        self.data = student.prepare(config, manifest, folds, self.emit, manifest.data_hash(), feature_config)
        return TeacherCorpus(self.data.manifest, self.data.folds, self.data.data_hash, self.data.features,
                             feature_config.to_json(), config.features)

    def identity(self, fold: Fold, labels: list[str]) -> dict:
        return student.student_identity(self.student, fold, labels, None)

    def fit(self, corpus: TeacherCorpus, fold: Fold, parts: dict[str, np.ndarray]) -> Fit:
        config = self.student
        loss_fn = student.make_loss(config.method, config.method_params)
        trained = student.fit_student(config, self.data, fold, parts, loss_fn, None, self.emit)
        history, best_epoch = trained.fit.history, trained.fit.best_epoch
        checkpoint = student.checkpoint_meta(config, self.data, fold, provenance(), best_epoch,
                                             trained.normalization.record, self.config.to_dict())
        return Fit(CnnTeacher(trained.model, checkpoint, trained.device), history, history[best_epoch - 1],
                   trained.seconds, best_epoch, config.epochs, extra={"recipe": config.recipe,
                                                                      "epochs_run": len(history)},
                   test_predictions=trained.test_predictions, inputs=trained.normalization.features)

