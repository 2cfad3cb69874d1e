"""WavLM teachers: a transformers checkpoint fine-tuned once per fold, on that fold's training speakers only.

Per fold: load the checkpoint with a fresh head (seeded; ``models/wavlm_teacher.py``), fine-tune on raw
16 kHz waveforms of the training speakers (a random ``length``-sample window of longer utterances each
time they are drawn), keep the epoch with the best UA on the validation speaker(s), then store logits,
the frame-mean of every hidden state (``embeddings`` [N, L, D] float16, meta ``layer_weights``) and the
pooled vector (``pooled``) for *every* utterance of the corpus (centre window), with the fold's training
speakers, so a student can check the teacher never heard its test speakers. The fine-tuned model is
saved beside them (``<fold>/wavlm/``: safetensors + JSON) to label other audio later.

Optimisation: AdamW, the transformer at ``lr`` and the new head at ``head_lr``, linear warm-up then
linear decay (``transformers.get_linear_schedule_with_warmup``), gradient clipping, gradient
accumulation, bf16 autocast on CUDA, the CNN feature encoder frozen by default (as in SUPERB and
most WavLM fine-tuning recipes: it is low-level and costs most of the memory for long inputs).
The defaults (20 epochs, batch 8, lr 5e-5, weight decay 1e-2) are a transformer's, not the seed CNN's.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from serkd.config import ConfigError, TeacherConfig, TrainingConfig, meta, with_default
from serkd.data.audio import load_audio
from serkd.data.features import crop, per_utterance
from serkd.data.manifest import Manifest
from serkd.data.protocol import Fold
from serkd.data.teacher_outputs import TeacherOutputs
from serkd.errors import SerkdError
from serkd.models import wavlm_teacher
from serkd.train import fold as shared
from serkd.train.events import Emitter, EpochClock
from serkd.train.loop import BestEpoch, batches, pick_device
from serkd.train.metrics import wa_ua
from serkd.train.teachers import Fit, FoldTeacher, TeacherCorpus, TeacherKind, register

WEIGHTS_FOLDER = "wavlm"  # <fold>/wavlm/: the fine-tuned model (save_pretrained)


@dataclass(kw_only=True)
class WavLMTeacherConfig(TeacherConfig, TrainingConfig):
    """A WavLM (or wav2vec 2.0 / HuBERT) checkpoint fine-tuned per fold on waveforms."""

    epochs: int = with_default(TrainingConfig, "epochs", 20)
    batch_size: int = with_default(TrainingConfig, "batch_size", 8)
    lr: float = with_default(TrainingConfig, "lr", 5e-5)
    weight_decay: float = with_default(TrainingConfig, "weight_decay", 1e-2)
    revision: str | None = field(default=None, metadata=meta("hub revision (branch, tag or commit)"))
    head_lr: float = field(default=5e-4, metadata=meta("learning rate of the new head"))
    warmup: float = field(default=0.1, metadata=meta("linear warm-up, fraction of the optimiser steps"))
    grad_accum: int = field(default=1, metadata=meta("batches per optimiser step"))
    freeze_feature_encoder: bool = field(default=True, metadata=meta("keep the CNN feature encoder frozen"))
    bf16: bool = field(default=True, metadata=meta("bf16 autocast on CUDA"))
    max_grad_norm: float = field(default=1.0, metadata=meta("gradient clipping norm"))

    def validate(self) -> None:
        super().validate()
        if self.grad_accum < 1:
            raise ConfigError("grad_accum", "must be at least 1")
        if not 0 <= self.warmup < 1:
            raise ConfigError("warmup", "is a fraction of the optimiser steps, in [0, 1)")
        if self.crop_length < 400:
            raise ConfigError("length", "must be at least 400 samples (25 ms) for the WavLM feature encoder")


class WavLMFoldTeacher(FoldTeacher):
    """A fine-tuned WavLM: logits, every layer's frame mean [N, L, D] and the pooled vector of any audio's
    centre window."""

    def __init__(self, model: wavlm_teacher.WavLMTeacher, labels: list[str], display: str, settings: dict,
                 device: torch.device):
        self.model, self.labels, self.display, self.device = model, list(labels), display, device
        # how it reads audio and runs: the crop, the inference batch, bf16 on CUDA, what it was made from
        self.settings = settings

    def read_inputs(self, manifest: Manifest, skip_bad: bool = False,
                    emit: Emitter | None = None) -> tuple[list[np.ndarray], Manifest]:
        return read_waveforms(manifest, skip_bad, emit or Emitter())

    def predict_inputs(self, inputs: list[np.ndarray], utt_ids) -> TeacherOutputs:
        logits, embeddings = predict(self.model, inputs, np.arange(len(inputs)), self.settings["length"],
                                     self.settings["batch_size"], self.settings["bf16"], self.device)
        meta = {"embedding_layers": int(embeddings["embeddings"].shape[1]),
                "embedding_dim": int(embeddings["embeddings"].shape[2]),
                "pooled_dim": int(embeddings["pooled"].shape[1]), "layer_weights": self.model.layer_weights()}
        return TeacherOutputs(list(utt_ids), logits, meta, embeddings["embeddings"], embeddings["pooled"])

    def state(self) -> dict:
        return dict(self.settings)

    def save_weights(self, folder: Path) -> None:
        wavlm_teacher.save_finetuned(self.model, folder / WEIGHTS_FOLDER)

    @classmethod
    def load(cls, folder: Path, state: dict, device: str = "auto") -> WavLMFoldTeacher:
        where = pick_device(device)
        model = wavlm_teacher.load_finetuned(folder / WEIGHTS_FOLDER).to(where)
        settings = {k: v for k, v in state.items() if k not in ("kind", "labels", "display")}
        return cls(model, state["labels"], state["display"], settings, where)


@register("wavlm")
class WavLMKind(TeacherKind):
    Config = WavLMTeacherConfig
    Teacher = WavLMFoldTeacher
    title = "WavLM teachers"
    # the fields the one TeacherConfig of every kind hashed before the kinds had their own configs, at the
    # values they always had for WavLM teachers: fold keys stay those of stores fine-tuned before (reused)
    KEY_COMPAT: ClassVar[dict] = {"features": "mel", "student_params": {}, "c_grid": None, "crossfit": False}

    @classmethod
    def claims(cls, model: str) -> bool:
        return wavlm_teacher.looks_like_hf_model(model)

    def __init__(self, config: WavLMTeacherConfig, emit: Emitter):
        super().__init__(config, emit)
        # before any audio is read: a missing checkpoint fails fast (offline: one line)
        self.resolved = wavlm_teacher.resolve(config.model, config.revision)
        self.device = pick_device(config.device)

    def record(self) -> dict:
        return {"model": self.config.model, "revision": self.resolved.revision, "display": self.resolved.display}

    def read_corpus(self) -> TeacherCorpus:
        config = self.config
        manifest = shared.load_manifest(config)
        folds = shared.run_folds(config, manifest)
        waves, manifest = read_waveforms(manifest, config.skip_bad, self.emit)
        if self.resolved.note:
            self.emit.note(f"teacher: {self.resolved.note} ({config.model})")
        return TeacherCorpus(manifest, folds, manifest.data_hash(), waves,
                             {"kind": "waveform", "length": config.crop_length}, "waveform")

    def identity(self, fold: Fold, labels: list[str]) -> dict:
        # where the corpus lies, the device and how folds were picked change no output: data hash and fold say it
        config = self.config
        return {"model": self.resolved.revision, "config": {**self.KEY_COMPAT, **config.hashed_dict(), "model": None},
                "labels": list(labels), "fold": fold.to_json(), "length": config.crop_length}

    def fit(self, corpus: TeacherCorpus, fold: Fold, parts: dict[str, np.ndarray]) -> Fit:
        from transformers import set_seed  # transformers loads in seconds: only when fitting

        config = self.config
        # torch: the new head and dropout; numpy: transformers draws its SpecAugment masks from numpy's global state
        set_seed(config.seed)
        model = wavlm_teacher.load(self.resolved, corpus.manifest.labels)
        started = time.perf_counter()
        best_epoch, history = fine_tune(model, corpus.inputs, corpus.manifest.label_ids(), parts, config,
                                        self.device, self.emit, fold.name)
        seconds = time.perf_counter() - started
        settings = {"length": config.crop_length, "batch_size": config.batch_size, "bf16": config.bf16,
                    "model_id": config.model, "revision": self.resolved.revision}
        teacher = WavLMFoldTeacher(model, corpus.manifest.labels, self.resolved.display, settings, self.device)
        which = {"model_id": config.model, "revision": self.resolved.revision}
        return Fit(teacher, history, history[best_epoch - 1], seconds, best_epoch, config.epochs, extra=which,
                   meta=which)


def read_waveforms(manifest: Manifest, skip_bad: bool, emit: Emitter) -> tuple[list[np.ndarray], Manifest]:
    """Every utterance's 16 kHz waveform, in manifest order (bad audio: failing, or dropped with ``skip_bad``)."""
    advance = emit.task("audio", "audio", len(manifest))
    waves, kept = per_utterance(manifest, lambda utt: load_audio(utt.path), skip_bad, advance)
    emit.done("audio")
    for note in kept.notes:
        emit.note(note)
    return waves, kept


def fine_tune(teacher: wavlm_teacher.WavLMTeacher, waves: list[np.ndarray], labels: np.ndarray, parts: dict,
              config: WavLMTeacherConfig, device, emit: Emitter, name: str) -> tuple[int, list[dict]]:
    """Train on ``parts['train']``; keep the weights of the best validation UA (ties: the earlier epoch)."""
    from transformers import get_linear_schedule_with_warmup  # transformers loads in seconds: only when fitting

    if config.freeze_feature_encoder:
        teacher.freeze_feature_encoder()
    teacher.to(device)
    head = {id(p) for p in teacher.head_parameters()}
    trainable = [p for p in teacher.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([
        {"params": [p for p in trainable if id(p) not in head], "lr": config.lr},
        {"params": [p for p in trainable if id(p) in head], "lr": config.head_lr},
    ], weight_decay=config.weight_decay)
    train_idx = torch.as_tensor(parts["train"], dtype=torch.long)
    micro_per_epoch = len(list(batches(train_idx, config.batch_size)))
    steps_per_epoch = -(-micro_per_epoch // config.grad_accum)
    total = steps_per_epoch * config.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup * total), total)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)  # the training windows
    valid_targets = labels[parts["valid"]]
    targets = torch.from_numpy(labels)
    history: list[dict] = []
    best = BestEpoch()
    clock = EpochClock(emit, name, config.epochs, "teacher")
    for epoch in range(1, config.epochs + 1):
        teacher.train()
        started, total_loss, seen, skipped = time.perf_counter(), 0.0, 0, 0
        micro = list(batches(train_idx, config.batch_size, generator))
        for start in range(0, len(micro), config.grad_accum):
            group = micro[start : start + config.grad_accum]
            group_size = sum(len(idx) for idx in group)
            optimizer.zero_grad(set_to_none=True)
            for idx in group:
                inputs = teacher.inputs([crop(waves[i], config.crop_length, rng) for i in idx.tolist()])
                with _autocast(device, config.bf16):
                    logits, _ = teacher(**{k: v.to(device) for k, v in inputs.items()})
                loss = torch.nn.functional.cross_entropy(logits.float(), targets[idx].to(device))
                (loss * len(idx) / group_size).backward()
                total_loss += torch.nan_to_num(loss.detach(), 0.0) * len(idx)  # on device: no sync per batch
                seen += len(idx)
            norm = torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            # one sync per step: a rare non-finite batch (SpecAugment on a from-scratch model, bf16
            # overflow) is skipped instead of turning every weight into NaN
            if torch.isfinite(norm):
                optimizer.step()
            else:
                skipped += 1
            scheduler.step()
        if skipped > steps_per_epoch // 2:
            raise SerkdError(f"fold {name}: training diverged (non-finite gradients in {skipped} of "
                             f"{steps_per_epoch} steps of epoch {epoch}); lower lr or head_lr")
        valid_logits, _ = predict(teacher, waves, parts["valid"], config.crop_length, config.batch_size,
                                  config.bf16, device)
        valid_wa, valid_ua = wa_ua(valid_targets, valid_logits.argmax(axis=1))
        history.append({"epoch": epoch, "train_loss": float(total_loss) / max(seen, 1), "valid_wa": valid_wa,
                        "valid_ua": valid_ua, "lr": scheduler.get_last_lr()[0], "skipped_steps": skipped,
                        "seconds": round(time.perf_counter() - started, 2)})
        best.update(epoch, valid_ua, teacher)
        clock.epoch(history[-1])
    best.restore(teacher)
    return best.epoch, history


@torch.no_grad()
def predict(teacher: wavlm_teacher.WavLMTeacher, waves: list[np.ndarray], indices, length: int, batch_size: int,
            bf16: bool, device):
    """(logits [N, C], {"embeddings": [N, L, D] float16, "pooled": [N, P] float32}) for the centre ``length``
    window of each utterance, in ``indices`` order: the masked frame mean of every hidden state (feature KD)
    and the classifier's input; the dict's keys are the store's tensor names.

    Batches hold utterances of similar length: with a group-norm encoder (Base+) padding shifts the
    normalisation, so less padding keeps an utterance's output close to what it gets alone.
    """
    teacher.eval()
    indices = np.asarray(indices, dtype=np.int64)
    windows = [crop(waves[i], length) for i in indices]
    order = np.argsort([len(w) for w in windows], kind="stable")
    logits, pooled, layers = [None] * len(indices), [None] * len(indices), [None] * len(indices)
    size = 2 * batch_size  # no gradients: twice the training batch fits
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        inputs = teacher.inputs([windows[j] for j in chunk])
        with _autocast(device, bf16):
            z, e, h = teacher.forward_layers(**{k: v.to(device) for k, v in inputs.items()})
        z, e, h = z.float().cpu().numpy(), e.float().cpu().numpy(), h.cpu().numpy().astype(np.float16)
        for row, j in enumerate(chunk):
            logits[j], pooled[j], layers[j] = z[row], e[row], h[row]
    if not len(indices):
        empty = np.zeros((0, 0), np.float32)
        return empty, {"embeddings": np.zeros((0, 0, 0), np.float16), "pooled": empty}
    return np.stack(logits), {"embeddings": np.stack(layers), "pooled": np.stack(pooled)}


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16) if bf16 and device.type == "cuda" else nullcontext()
