"""The model to ship: one student trained on every speaker, for as many epochs as the folds found best.

    info = train_final(RunConfig(..., out="runs/ce"))     # after run(config); or run(config.replace(final=True))

Cross-validation measures a recipe; it does not give one model to deploy (each fold's model lacks its test
and validation speakers). :func:`train_final` trains the recipe once more on the union of every fold's
training, validation and test speakers, with no selection (nothing is held out to select on): it runs for
the **median of the folds' best epochs** (half rounded up) and keeps the last epoch's weights. It writes
``RUN_DIR/final/`` (``model.safetensors`` + ``checkpoint.json``) like a fold folder, so ``serkd export
RUN_DIR/final`` ships it; ``checkpoint.json`` adds ``cv`` (the per-fold WA/UA it stands on, mean ± std over
folds, the epoch count and why). There is no ``results.json``: the final model has no test speakers, and
its honest estimate is the CV mean. The folds are those in ``RUN_DIR`` (trained by this call or earlier
ones with the same config); a final model of the same config, data and folds is reused.

KD methods distil from the mean of the fold teachers' logits (each fold teacher saw some of the speakers;
with no test set there is nothing to leak into), or from a store fold named ``final`` when the store has
one. Feature-KD methods need that ``final`` fold (fold teachers' embedding spaces do not average).

Built on the student driver (``train/student.py``); ``train/run.py`` runs the folds, then this.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from serkd import models
from serkd.config import ConfigError, RunConfig
from serkd.data import teacher_outputs
from serkd.data.features import FeatureConfig
from serkd.data.normalize import fold_normalization
from serkd.errors import SerkdError
from serkd.io import read_json
from serkd.layout import FINAL, RESULTS
from serkd.train import fold as shared
from serkd.train.checkpoint import META, save_checkpoint
from serkd.train.events import Emitter, EpochClock, OnEvent
from serkd.train.loop import fit, pick_device
from serkd.train.provenance import provenance
from serkd.train.results import FoldResult
from serkd.train.student import make_loss, needs_teacher, plan, prepare, teacher_fold


def cv_scores(out: str | Path) -> dict:
    """The folds a final model stands on: per-fold WA/UA and best epoch, mean ± std, the epoch count."""
    out = Path(out)
    folds = []
    for path in sorted(out.glob(f"*/{RESULTS}")):
        if path.parent.name == FINAL:
            continue
        result = FoldResult.from_json(read_json(path))
        folds.append({"fold": result.fold, "wa": result.wa, "ua": result.ua, "best_epoch": result.best_epoch,
                      "selection": result.selection, "config_hash": result.config_hash, "marks": result.marks})
    if not folds:
        raise ConfigError("final", f"{out}: no finished folds to take the epoch count and scores from (train the "
                                   "folds first: the same call does it)")
    epochs_found = [f["best_epoch"] for f in folds if f["best_epoch"]]
    wa, ua = np.array([f["wa"] for f in folds]), np.array([f["ua"] for f in folds])
    epochs = max(1, int(np.median(epochs_found) + 0.5))
    on = "test" if any(f["selection"] == "test" for f in folds) else "validation"
    return {
        "folds": folds, "n_folds": len(folds), "wa_mean": float(wa.mean()), "wa_std": float(wa.std()),
        "ua_mean": float(ua.mean()), "ua_std": float(ua.std()), "epochs": epochs,
        "epochs_why": f"median (half rounded up) of the {len(epochs_found)} folds' best epochs {epochs_found}, each "
                      f"chosen on {on} UA; the final model has nothing held out, so it trains that long and keeps "
                      "the last epoch",
        "marks": sorted({m for f in folds for m in f["marks"]}),
    }


def _teacher_logits(config: RunConfig, data, loss_fn) -> tuple[torch.Tensor | None, torch.Tensor | None, str | None]:
    """Teacher logits (and embeddings) for every utterance: the store's ``final`` fold, or the fold mean."""
    if not (config.teacher and needs_teacher(loss_fn)):
        return None, None, None
    store = Path(config.teacher)
    utt_ids = [u.utt_id for u in data.manifest.utterances]
    if (store / FINAL).is_dir():
        outputs = teacher_outputs.read_fold(store, FINAL)
        rows = outputs.rows(utt_ids, store / FINAL)
        embeddings = None
        if getattr(loss_fn, "needs_embeddings", False):
            embeddings = torch.from_numpy(teacher_outputs.embedding_matrix(
                outputs, loss_fn.teacher_layer, store / FINAL, config.method)[rows])
        return torch.from_numpy(outputs.logits[rows]), embeddings, f"{store}/{FINAL}"
    if getattr(loss_fn, "needs_embeddings", False):
        raise ConfigError("final", f"{store}: feature-KD method {config.method!r} needs a teacher fold named "
                                   f"{FINAL!r} trained on every speaker (fold teachers' embeddings do not average)")
    logits = [teacher_fold(config, data, f, loss_fn=loss_fn).logits for f in data.folds if (store / f.name).is_dir()]
    if not logits:
        raise ConfigError("final", f"{store}: no teacher folds to distil from")
    return torch.from_numpy(np.mean(logits, axis=0).astype(np.float32)), None, \
        f"mean of {len(logits)} fold teachers of {store}"


def train_final(config: RunConfig, data=None, on_event: OnEvent | None = None, overwrite: bool = False) -> dict:
    """Train (or reuse) ``RUN_DIR/final`` from the folds in ``config.out``; return its ``checkpoint.json``."""
    emit = Emitter(on_event)
    out = Path(config.out)
    cv = cv_scores(out)
    if data is None:
        checked = plan(config, emit)
        data = prepare(config, checked.manifest, checked.folds, emit, checked.data_hash, checked.feature_config)
    manifest = data.manifest
    epochs = cv["epochs"]
    key = shared.fold_key({"config": config.hashed_dict(), "data_hash": data.data_hash, "epochs": epochs,
                           "folds": [(f["fold"], f["config_hash"], f["best_epoch"]) for f in cv["folds"]]})
    folder = out / FINAL
    if not overwrite and (folder / META).is_file():
        try:
            previous = read_json(folder / META)
        except (OSError, ValueError):
            previous = {}
        if previous.get("final_key") == key:
            emit.info(f"{FINAL}: cached (same config, data and folds)", FINAL)
            return previous
    loss_fn = make_loss(config.method, config.method_params)
    teacher_logits, teacher_embeddings, teacher = _teacher_logits(config, data, loss_fn)
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    model = models.create(config.student, num_classes=len(manifest.labels), **config.model_options())
    every = np.arange(len(manifest))
    norm = fold_normalization(config.normalize, FeatureConfig(config.features, config.crop_length), data.features,
                              manifest, every, train_description="every speaker (a final model holds none out)")
    # nothing is held out: the epoch lines show no validation score
    clock = EpochClock(emit, FINAL, epochs, f"{config.student}/{config.method}", held_out=False)
    last: dict = {}

    def on_epoch(record: dict) -> None:
        clock.epoch(record)
        if record["epoch"] == epochs:  # the loop restores its 'best' epoch; the final model keeps the last
            last.update({k: v.detach().clone() for k, v in model.state_dict().items()})

    started = time.perf_counter()
    # the loop's validation pass needs some utterances: one batch of training ones, its scores unused
    result = fit(model, loss_fn, norm.features, data.targets, every, every[: config.batch_size],
                 config.replace(epochs=epochs), teacher_logits, device, on_epoch, teacher_embeddings)
    model.load_state_dict(last)
    seconds = time.perf_counter() - started
    speakers = manifest.speakers
    meta = {
        "model": config.student, "model_options": config.model_options(), "labels": manifest.labels,
        "features": FeatureConfig(config.features, config.crop_length).to_json(),
        "fold": {"name": FINAL, "test": [], "valid": [], "train": speakers, "selection": "none"},
        "config": config.to_dict(), "data_hash": data.data_hash, "provenance": provenance(), "best_epoch": None,
        "epochs": epochs, "n_train": len(manifest), "teacher": teacher, "train_seconds": round(seconds, 2),
        "train_loss": [h["train_loss"] for h in result.history], "cv": cv, "final_key": key,
        "normalization": norm.record,
    }
    save_checkpoint(folder, model, meta)
    emit.info(f"{FINAL}: {len(manifest)} utterances of {len(speakers)} speakers, {epochs} epochs (median best epoch "
              f"of {cv['n_folds']} folds); it stands on CV UA {100 * cv['ua_mean']:.2f} ± {100 * cv['ua_std']:.2f}, "
              f"WA {100 * cv['wa_mean']:.2f} ± {100 * cv['wa_std']:.2f} ({seconds:.1f} s) -> {folder}", FINAL)
    return meta


def is_final(fold_dir: str | Path) -> bool:
    meta = Path(fold_dir) / META
    if not meta.is_file():
        return False
    try:
        return (read_json(meta).get("fold") or {}).get("name") == FINAL and "cv" in read_json(meta)
    except (OSError, ValueError):
        raise SerkdError(f"{meta}: unreadable checkpoint metadata") from None
