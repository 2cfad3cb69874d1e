"""Fine-tune a WavLM teacher once per fold, on that fold's training speakers only, and store its outputs.

Per fold: load the checkpoint with a fresh head (seeded), fine-tune on raw 16 kHz waveforms of the
training speakers (a random ``length``-sample window of longer utterances each time they are drawn),
keep the epoch with the best UA on the validation speaker(s), then write logits, the frame-mean of
every hidden state (``embeddings`` [N, L, D] float16, meta ``layer_weights``) and the pooled vector
(``pooled``) for *every* utterance of the corpus (centre window) to the teacher outputs store with the fold's
training speakers, so a student can check the teacher never heard its test speakers.

Optimisation: AdamW, the transformer at ``lr`` and the new head at ``head_lr``, linear warm-up then
linear decay (``transformers.get_linear_schedule_with_warmup``), gradient clipping at 1, gradient
accumulation, bf16 autocast on CUDA, the CNN feature encoder frozen by default (as in SUPERB and
most WavLM fine-tuning recipes: it is low-level and costs most of the memory for long inputs).

A fold whose outputs exist with the same config hash and data hash is not retrained.
Layout of ``OUT``: the store (``<fold>/outputs.{safetensors,json}``), beside each fold's outputs a
``results.json`` in the shape of a student's (``serkd report OUT`` shows the teacher's WA/UA), and
``teacher.json`` with the config, folds and provenance of the last command.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup, set_seed

from serkd.config import TeacherConfig
from serkd.data import teacher_outputs
from serkd.data.audio import load_audio
from serkd.data.features import crop, per_utterance
from serkd.data.manifest import Manifest
from serkd.data.protocol import Fold, fold_indices
from serkd.errors import SerkdError
from serkd.models import wavlm_teacher
from serkd.train import fold as shared
from serkd.train.events import Emitter, EpochClock, Event, OnEvent
from serkd.train.loop import BestEpoch, batches, pick_device
from serkd.train.metrics import wa_ua
from serkd.train.provenance import provenance
from serkd.train.results import FoldResult
from serkd.train.threads import use_threads

TEACHER_FILE = "teacher.json"


@dataclass
class Waveforms:
    manifest: Manifest
    waves: list[np.ndarray]
    targets: np.ndarray
    data_hash: str
    folds: list[Fold]


def load_waveforms(config: TeacherConfig, emit: Emitter) -> Waveforms:
    manifest = shared.load_manifest(config)
    folds = shared.run_folds(config, manifest)
    advance = emit.task("audio", "audio", len(manifest))
    waves, manifest = per_utterance(manifest, lambda utt: load_audio(utt.path), config.skip_bad, advance)
    emit.done("audio")
    for note in manifest.notes:
        emit.note(note)
    return Waveforms(manifest, waves, manifest.label_ids(), manifest.data_hash(), folds)


def train_teacher(config: TeacherConfig, on_event: OnEvent | None = None, overwrite: bool = False) -> list[FoldResult]:
    """Fine-tune (or reuse) the teacher of every chosen fold into the store ``config.out``; return the results."""
    emit = Emitter(on_event)
    config = config.resolved()
    config.validate()
    out = Path(config.out)
    if overwrite and (out / TEACHER_FILE).is_file():
        shared.clear_run(out)
        (out / TEACHER_FILE).unlink(missing_ok=True)
    resolved = wavlm_teacher.resolve(config.model, config.revision)  # before reading audio: fail fast offline
    # no run-folder config check: each fold's outputs carry their own config hash, so one store may hold
    # folds fine-tuned with different settings (a fold retrained with another config replaces only itself)
    use_threads(config.threads, emit)  # unset: one per physical core of this process' share; warns if oversubscribed
    data = load_waveforms(config, emit)
    shared.record_run(out, config, data, role="teacher", features={"kind": "waveform", "length": config.crop_length},
                      model=config.model, revision=resolved.revision, display=resolved.display)
    device = pick_device(config.device)
    record = {"config": config.to_dict(), "role": "teacher", "model": config.model, "revision": resolved.revision,
              "display": resolved.display, "labels": data.manifest.labels, "data_hash": data.data_hash,
              "folds": [f.to_json() for f in data.folds], "device": str(device), "provenance": provenance()}
    from serkd.io import atomic_write_json

    atomic_write_json(out / TEACHER_FILE, record)
    if resolved.note:
        emit.note(f"teacher: {resolved.note} ({config.model})")
    return [_fold(config, resolved, data, fold, device, out, record, emit, overwrite) for fold in data.folds]


def fold_key(config: TeacherConfig, resolved: wavlm_teacher.ResolvedModel, fold: Fold, labels) -> str:
    # where the corpus lies, the device and how folds were picked change no output: data hash and fold say it
    return shared.fold_key({"model": resolved.revision, "config": {**config.hashed_dict(), "model": None},
                            "labels": list(labels), "fold": fold.to_json(), "length": config.crop_length})


def _fold(config: TeacherConfig, resolved, data: Waveforms, fold: Fold, device, out: Path, record: dict,
          emit: Emitter, overwrite: bool) -> FoldResult:
    labels = data.manifest.labels
    parts = fold_indices(data.manifest, fold)
    absent_test = shared.check_fold(data.manifest, fold, parts, emit)
    key = fold_key(config, resolved, fold, labels)
    cached = None if overwrite else shared.cached_result(out / fold.name, key, data.data_hash)
    if cached and teacher_outputs.cached(out, fold.name, key, data.data_hash):
        emit.info(f"fold {fold.name}: cached (same config and data)", fold.name)
        emit(Event("fold_done", fold=fold.name, data={"result": cached, "cached": True}))
        return cached

    # torch: the new head and dropout; numpy: transformers draws its SpecAugment masks from numpy's global state
    set_seed(config.seed)
    teacher = wavlm_teacher.load(resolved, labels)
    started = time.perf_counter()
    best_epoch, history = fine_tune(teacher, data, parts, config, device, emit, fold.name)
    seconds = time.perf_counter() - started
    logits, embeddings = predict(teacher, data.waves, np.arange(len(data.waves)), config, device)
    best = history[best_epoch - 1]
    utt_ids = [u.utt_id for u in data.manifest.utterances]
    git_commit = record["provenance"]["git_commit"]
    teacher_outputs.write_fold(out, fold.name, utt_ids, logits, shared.teacher_meta(
        fold, data.manifest, config, data.data_hash, key, best, teacher=resolved.display, model_id=config.model,
        revision=resolved.revision, best_epoch=best_epoch, features={"kind": "waveform", "length": config.crop_length},
        git_commit=git_commit, embedding_layers=int(embeddings["embeddings"].shape[1]),
        embedding_dim=int(embeddings["embeddings"].shape[2]), pooled_dim=int(embeddings["pooled"].shape[1]),
        layer_weights=teacher.layer_weights()), **embeddings, embedding_dtype="float16")
    result = shared.base_result(
        data.manifest, fold, parts, logits[parts["test"]].argmax(axis=1), absent_test, student=resolved.display,
        method="teacher", features="waveform", role="teacher", valid_wa=best["valid_wa"], valid_ua=best["valid_ua"],
        best_epoch=best_epoch, epochs=config.epochs, marks=shared.marks(fold), seed=config.seed,
        data_hash=data.data_hash, config_hash=key, git_commit=git_commit, train_seconds=round(seconds, 2),
        history=history, extra={"model_id": config.model, "revision": resolved.revision})
    shared.write_result(out / fold.name, result)
    emit.info(shared.done_line(result, "teacher "), fold.name)
    emit(Event("fold_done", fold=fold.name, data={"result": result, "cached": False}))
    return result


def fine_tune(teacher, data: Waveforms, parts: dict, config: TeacherConfig, device, emit: Emitter,
              name: str) -> tuple[int, list[dict]]:
    """Train on ``parts['train']``; keep the weights of the best validation UA (ties: the earlier epoch)."""
    run = config
    if config.freeze_feature_encoder:
        teacher.freeze_feature_encoder()
    teacher.to(device)
    head = {id(p) for p in teacher.head_parameters()}
    trainable = [p for p in teacher.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([
        {"params": [p for p in trainable if id(p) not in head], "lr": run.lr},
        {"params": [p for p in trainable if id(p) in head], "lr": config.head_lr},
    ], weight_decay=run.weight_decay)
    train_idx = torch.as_tensor(parts["train"], dtype=torch.long)
    micro_per_epoch = len(list(batches(train_idx, run.batch_size)))
    steps_per_epoch = -(-micro_per_epoch // config.grad_accum)
    total = steps_per_epoch * run.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup * total), total)
    generator = torch.Generator().manual_seed(run.seed)
    rng = np.random.default_rng(run.seed)  # the training windows
    valid_targets = data.targets[parts["valid"]]
    targets = torch.from_numpy(data.targets)
    history: list[dict] = []
    best = BestEpoch()
    clock = EpochClock(emit, name, run.epochs, "teacher")
    for epoch in range(1, run.epochs + 1):
        teacher.train()
        started, total_loss, seen, skipped = time.perf_counter(), 0.0, 0, 0
        micro = list(batches(train_idx, run.batch_size, generator))
        for start in range(0, len(micro), config.grad_accum):
            group = micro[start : start + config.grad_accum]
            group_size = sum(len(idx) for idx in group)
            optimizer.zero_grad(set_to_none=True)
            for idx in group:
                inputs = teacher.inputs([crop(data.waves[i], config.crop_length, rng) for i in idx.tolist()])
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
        valid_logits, _ = predict(teacher, data.waves, parts["valid"], config, device)
        valid_wa, valid_ua = wa_ua(valid_targets, valid_logits.argmax(axis=1))
        history.append({"epoch": epoch, "train_loss": float(total_loss) / max(seen, 1), "valid_wa": valid_wa,
                         "valid_ua": valid_ua, "lr": scheduler.get_last_lr()[0], "skipped_steps": skipped,
                         "seconds": round(time.perf_counter() - started, 2)})
        best.update(epoch, valid_ua, teacher)
        clock.epoch(history[-1])
    best.restore(teacher)
    return best.epoch, history


@torch.no_grad()
def predict(teacher, waves: list[np.ndarray], indices, config: TeacherConfig, device):
    """(logits [N, C], {"embeddings": [N, L, D] float16, "pooled": [N, P] float32}) for the centre window
    of each utterance, in ``indices`` order: the masked frame mean of every hidden state (feature KD)
    and the classifier's input; the dict's keys are the store's tensor names.

    Batches hold utterances of similar length: with a group-norm encoder (Base+) padding shifts the
    normalisation, so less padding keeps an utterance's output close to what it gets alone.
    """
    teacher.eval()
    indices = np.asarray(indices, dtype=np.int64)
    windows = [crop(waves[i], config.crop_length) for i in indices]
    order = np.argsort([len(w) for w in windows], kind="stable")
    logits, pooled, layers = [None] * len(indices), [None] * len(indices), [None] * len(indices)
    size = 2 * config.batch_size  # no gradients: twice the training batch fits
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        inputs = teacher.inputs([windows[j] for j in chunk])
        with _autocast(device, config.bf16):
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
