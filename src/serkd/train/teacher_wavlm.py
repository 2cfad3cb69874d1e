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

import copy
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from transformers import get_linear_schedule_with_warmup, set_seed

from serkd.data import teacher_outputs
from serkd.data.audio import load_audio
from serkd.data.features import DEFAULT_LENGTH, crop, per_utterance
from serkd.data.manifest import Manifest
from serkd.data.protocol import Fold
from serkd.errors import SerkdError
from serkd.io import atomic_write_json, read_json
from serkd.models import wavlm_teacher
from serkd.train.loop import batches, pick_device
from serkd.train.metrics import confusion, wa_ua
from serkd.train.provenance import provenance
from serkd.train.run import (
    MARK_TEST_SELECTED,
    RunConfig,
    check_fold,
    fold_indices,
    load_manifest,
    progress_bar,
    run_folds,
)

RESULTS = "results.json"
# serkd train's defaults suit a CNN trained from scratch; fine-tuning a pre-trained transformer wants these
WAVLM_DEFAULTS = {"epochs": 20, "batch_size": 8, "lr": 5e-5, "weight_decay": 1e-2}


@dataclass
class WavLMTeacherConfig:
    """``run`` carries the options shared with ``serkd train`` (corpus, folds, epochs, lr, length, ...)."""

    model: str
    run: RunConfig
    revision: str | None = None
    head_lr: float = 5e-4
    warmup: float = 0.1  # fraction of all optimiser steps
    grad_accum: int = 1
    freeze_feature_encoder: bool = True
    bf16: bool = True  # autocast on CUDA only; CPU runs in float32
    max_grad_norm: float = 1.0

    @property
    def length(self) -> int:
        return self.run.length or DEFAULT_LENGTH.get(self.run.corpus, 80000)

    def check(self) -> None:
        if self.grad_accum < 1 or self.run.batch_size < 1:
            raise SerkdError("--grad-accum and --batch-size must be at least 1")
        if not 0 <= self.warmup < 1:
            raise SerkdError("--warmup is a fraction of the optimiser steps, in [0, 1)")
        if self.length < 400:
            raise SerkdError("--length must be at least 400 samples (25 ms) for the WavLM feature encoder")


@dataclass
class Waveforms:
    manifest: Manifest
    waves: list[np.ndarray]
    targets: np.ndarray
    data_hash: str


def load_waveforms(run: RunConfig, console: Console) -> Waveforms:
    manifest = load_manifest(run)
    with progress_bar(console) as progress:
        task = progress.add_task("audio", total=len(manifest))
        waves, manifest = per_utterance(manifest, lambda utt: load_audio(utt.path), run.skip_bad,
                                        lambda n: progress.advance(task, n))
    for note in manifest.notes:
        console.print(f"[yellow]{note}")
    return Waveforms(manifest, waves, manifest.label_ids(), manifest.data_hash())


def train_teacher(config: WavLMTeacherConfig, out: str | Path, console: Console | None = None) -> list[dict]:
    """Fine-tune (or reuse) the teacher of every chosen fold; return the per-fold result dicts."""
    console = console or Console(stderr=True)
    out = Path(out)
    config.check()
    resolved = wavlm_teacher.resolve(config.model, config.revision)  # before reading audio: fail fast offline
    data = load_waveforms(config.run, console)
    folds = run_folds(config.run, data.manifest)
    device = pick_device(config.run.device)
    record = {
        "config": asdict(config), "role": "teacher", "model": config.model, "revision": resolved.revision,
        "display": resolved.display, "labels": data.manifest.labels, "data_hash": data.data_hash,
        "corpus_counts": data.manifest.counts(), "folds": [f.to_json() for f in folds], "device": str(device),
        "provenance": provenance(),
    }
    atomic_write_json(out / "teacher.json", record)
    if resolved.note:
        console.print(f"[yellow]teacher: {resolved.note} ({config.model})")
    return [_fold(config, resolved, data, fold, device, out, record, console) for fold in folds]


def fold_key(config: WavLMTeacherConfig, resolved: wavlm_teacher.ResolvedModel, fold: Fold, labels) -> str:
    run = config.run
    # the corpus location, the device and how folds were picked change no output: data hash and fold say it
    hyper = {k: getattr(run, k) for k in ("epochs", "batch_size", "lr", "weight_decay", "seed", "select")}
    return teacher_outputs.config_hash({
        "model": resolved.revision, "labels": list(labels), "fold": fold.to_json(), "length": config.length,
        "run": hyper, "head_lr": config.head_lr, "warmup": config.warmup, "grad_accum": config.grad_accum,
        "freeze_feature_encoder": config.freeze_feature_encoder, "bf16": config.bf16,
        "max_grad_norm": config.max_grad_norm,
    })


def _fold(config, resolved, data: Waveforms, fold: Fold, device, out: Path, record: dict, console) -> dict:
    labels = data.manifest.labels
    parts = fold_indices(data.manifest, fold)
    absent_test = check_fold(data.manifest, fold, parts, console)
    key = fold_key(config, resolved, fold, labels)
    if teacher_outputs.cached(out, fold.name, key, data.data_hash) and (out / fold.name / RESULTS).is_file():
        console.print(f"fold {fold.name}: cached (same config and data)")
        return read_json(out / fold.name / RESULTS)

    # torch: the new head and dropout; numpy: transformers draws its SpecAugment masks from numpy's global state
    set_seed(config.run.seed)
    teacher = wavlm_teacher.load(resolved, labels)
    started = time.perf_counter()
    best_epoch, history = fine_tune(teacher, data, parts, config, device, console, fold.name)
    seconds = time.perf_counter() - started
    logits, embeddings = predict(teacher, data.waves, np.arange(len(data.waves)), config, device)
    test_pred = logits[parts["test"]].argmax(axis=1)
    wa, ua = wa_ua(data.targets[parts["test"]], test_pred)
    best = history[best_epoch - 1]
    utt_ids = [u.utt_id for u in data.manifest.utterances]
    teacher_outputs.write_fold(out, fold.name, utt_ids, logits, {
        "teacher": resolved.display, "model_id": config.model, "revision": resolved.revision,
        "provenance": "trained", "fold_clean": fold.selection == "valid", "best_epoch": best_epoch,
        "train_speakers": list(fold.train), "valid_speakers": list(fold.valid), "test_speakers": list(fold.test),
        "labels": labels, "data_hash": data.data_hash, "config_hash": key, "valid_wa": best["valid_wa"],
        "valid_ua": best["valid_ua"], "selection": fold.selection,
        "features": {"kind": "waveform", "length": config.length}, "git_commit": record["provenance"]["git_commit"],
        "embedding_layers": int(embeddings["embeddings"].shape[1]),
        "embedding_dim": int(embeddings["embeddings"].shape[2]), "pooled_dim": int(embeddings["pooled"].shape[1]),
        "layer_weights": teacher.layer_weights(),
    }, **embeddings, embedding_dtype="float16")
    summary = {
        "fold": fold.name, "test": list(fold.test), "valid": list(fold.valid), "wa": wa, "ua": ua,
        "valid_wa": best["valid_wa"], "valid_ua": best["valid_ua"], "best_epoch": best_epoch,
        "epochs": config.run.epochs, "selection": fold.selection,
        "marks": [MARK_TEST_SELECTED] if fold.selection == "test" else [],
        "n_train": len(parts["train"]), "n_valid": len(parts["valid"]), "n_test": len(parts["test"]),
        "absent_test_classes": absent_test, "labels": labels,
        "confusion": confusion(data.targets[parts["test"]], test_pred, len(labels)),
        "corpus": config.run.corpus, "student": resolved.display, "method": "teacher", "features": "waveform",
        "teacher": None, "role": "teacher", "model_id": config.model, "revision": resolved.revision,
        "seed": config.run.seed, "data_hash": data.data_hash, "git_commit": record["provenance"]["git_commit"],
        "train_seconds": round(seconds, 2), "history": history,
    }
    atomic_write_json(out / fold.name / RESULTS, summary)
    console.print(f"{fold.name}: teacher test WA {100 * wa:.2f}  UA {100 * ua:.2f}  (best epoch {best_epoch} on "
                  f"{'test' if fold.selection == 'test' else 'validation'} UA, {seconds:.1f} s)")
    return summary


def fine_tune(teacher, data: Waveforms, parts: dict, config: WavLMTeacherConfig, device, console,
              name: str) -> tuple[int, list[dict]]:
    """Train on ``parts['train']``; keep the weights of the best validation UA (ties: the earlier epoch)."""
    run = config.run
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
    best_epoch, best_state = 0, None
    with progress_bar(console) as progress:
        task = progress.add_task(f"{name} teacher", total=total)
        for epoch in range(1, run.epochs + 1):
            teacher.train()
            started, total_loss, seen, skipped = time.perf_counter(), 0.0, 0, 0
            micro = list(batches(train_idx, run.batch_size, generator))
            for start in range(0, len(micro), config.grad_accum):
                group = micro[start : start + config.grad_accum]
                group_size = sum(len(idx) for idx in group)
                optimizer.zero_grad(set_to_none=True)
                for idx in group:
                    inputs = teacher.inputs([crop(data.waves[i], config.length, rng) for i in idx.tolist()])
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
                progress.advance(task)
            if skipped > steps_per_epoch // 2:
                raise SerkdError(f"fold {name}: training diverged (non-finite gradients in {skipped} of "
                                 f"{steps_per_epoch} steps of epoch {epoch}); lower --lr or --head-lr")
            valid_logits, _ = predict(teacher, data.waves, parts["valid"], config, device)
            valid_wa, valid_ua = wa_ua(valid_targets, valid_logits.argmax(axis=1))
            history.append({"epoch": epoch, "train_loss": float(total_loss) / max(seen, 1), "valid_wa": valid_wa,
                             "valid_ua": valid_ua, "lr": scheduler.get_last_lr()[0], "skipped_steps": skipped,
                             "seconds": round(time.perf_counter() - started, 2)})
            progress.update(task, description=f"{name} teacher valid UA {100 * valid_ua:.1f}")
            if best_state is None or valid_ua > history[best_epoch - 1]["valid_ua"]:
                best_epoch = epoch
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in teacher.state_dict().items()})
    teacher.load_state_dict(best_state)
    return best_epoch, history


@torch.no_grad()
def predict(teacher, waves: list[np.ndarray], indices, config: WavLMTeacherConfig, device):
    """(logits [N, C], {"embeddings": [N, L, D] float16, "pooled": [N, P] float32}) for the centre window
    of each utterance, in ``indices`` order: the masked frame mean of every hidden state (feature KD)
    and the classifier's input; the dict's keys are the store's tensor names.

    Batches hold utterances of similar length: with a group-norm encoder (Base+) padding shifts the
    normalisation, so less padding keeps an utterance's output close to what it gets alone.
    """
    teacher.eval()
    indices = np.asarray(indices, dtype=np.int64)
    windows = [crop(waves[i], config.length) for i in indices]
    order = np.argsort([len(w) for w in windows], kind="stable")
    logits, pooled, layers = [None] * len(indices), [None] * len(indices), [None] * len(indices)
    size = 2 * config.run.batch_size  # no gradients: twice the training batch fits
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
