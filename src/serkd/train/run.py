"""A run: one model per fold of a corpus, trained and evaluated, everything recorded on disk.

``RUN_DIR/run.json`` holds the full config, features, data hash, folds and provenance;
``RUN_DIR/<fold>/`` holds ``model.safetensors`` + ``checkpoint.json`` and ``results.json``.
With ``teacher_out`` the trained model's logits for every utterance of each fold go to a teacher
outputs store instead of being only evaluated (``serkd teacher train``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from serkd import distill, models
from serkd.data import teacher_outputs
from serkd.data.corpora import load_corpus
from serkd.data.features import DEFAULT_LENGTH, FeatureConfig, feature_matrix
from serkd.data.manifest import Manifest
from serkd.data.protocol import Fold, pick_folds, select_on_test
from serkd.errors import SerkdError
from serkd.io import atomic_write_json, read_json
from serkd.train.checkpoint import save_checkpoint
from serkd.train.loop import FitConfig, fit, pick_device, predict_logits
from serkd.train.metrics import confusion, wa_ua
from serkd.train.provenance import provenance

MARK_TEST_SELECTED = "test-selected"
MARK_LEAKY_TEACHER = "leaky-teacher"


@dataclass
class RunConfig:
    corpus: str
    root: str
    student: str = "lightsernet"
    method: str = "ce"
    method_params: dict = field(default_factory=dict)
    features: str = "mel"
    length: int | None = None  # samples; None = the corpus' seed default
    epochs: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    step_size: int = 300
    gamma: float = 0.9
    seed: int = 0
    folds: str | None = None
    select: str = "valid"
    teacher: str | None = None
    allow_leaky_teacher: bool = False
    device: str = "auto"
    skip_bad: bool = False
    seed_softmax: bool = False
    corpus_options: dict = field(default_factory=dict)
    tensorboard: bool = False  # per-epoch curves under RUN_DIR/tensorboard/<fold>

    def feature_config(self) -> FeatureConfig:
        return FeatureConfig(self.features, self.length or DEFAULT_LENGTH.get(self.corpus, 80000))

    def fit_config(self) -> FitConfig:
        return FitConfig(self.epochs, self.batch_size, self.lr, self.weight_decay, self.step_size, self.gamma,
                         self.seed)


@dataclass
class PreparedData:
    manifest: Manifest
    features: torch.Tensor  # (N, 1, F, T)
    targets: torch.Tensor  # (N,)
    folds: list[Fold]
    data_hash: str


def load_manifest(config: RunConfig) -> Manifest:
    """The corpus, bad files failing the run (or dropped with ``skip_bad``), after checking the options."""
    if config.select not in ("valid", "test"):
        raise SerkdError(f"--select must be 'valid' or 'test', not {config.select!r}")
    if config.epochs < 1:
        raise SerkdError("--epochs must be at least 1")
    return load_corpus(config.corpus, config.root, **config.corpus_options).raise_problems(config.skip_bad)


def make_loss(method: str, params: dict) -> torch.nn.Module:
    """The KD method, with each parameter checked against the type of its default (one-line errors)."""
    try:
        defaults = distill.defaults(method)
    except ValueError as exc:
        raise SerkdError(f"--method {method}: {exc}") from None
    for key, value in params.items():
        default = defaults.get(key)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise SerkdError(f"--method-param {key}={value!r}: expected true or false")
        if isinstance(default, int | float) and not isinstance(default, bool) and (
                isinstance(value, bool) or not isinstance(value, int | float)):
            raise SerkdError(f"--method-param {key}={value!r}: expected a number")
    try:
        return distill.create(method, **params)
    except (ValueError, TypeError) as exc:  # the registry's own message names the method or parameter
        raise SerkdError(f"--method {method}: {exc}") from None


def check_options(config: RunConfig) -> None:
    """Refuse impossible training options before any feature is computed."""
    if config.batch_size < 1:
        raise SerkdError("--batch-size must be at least 1")
    if not config.lr > 0 or config.weight_decay < 0:
        raise SerkdError("--lr must be positive and --weight-decay non-negative")
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise SerkdError(f"--device {config.device}: no CUDA device is available here (use --device cpu or auto)")
    if config.teacher and not Path(config.teacher).is_dir():
        raise SerkdError(f"{config.teacher}: teacher outputs folder not found")
    try:
        models.create(config.student, num_classes=2, **_model_options(config))
    except (TypeError, ValueError) as exc:
        raise SerkdError(f"--student {config.student}: {exc}") from None


def _check_out(out: Path, config: RunConfig) -> None:
    """A run folder holds one config: refuse to mix folds trained with different settings."""
    if not (out / "run.json").is_file():
        return
    try:
        previous = read_json(out / "run.json").get("config", {})
    except (OSError, ValueError):
        return
    ignore = {"folds", "device"}
    changed = sorted(k for k, v in asdict(config).items() if k not in ignore and previous.get(k, v) != v)
    if changed:
        raise SerkdError(f"{out}: holds a run with another config ({', '.join(changed)} differ); "
                         "choose another --out or remove it")


def _fold_union(out: Path, folds: list[Fold]) -> list[dict]:
    """Folds already in the run folder (same config, earlier --folds) plus this call's."""
    previous = read_json(out / "run.json").get("folds", []) if (out / "run.json").is_file() else []
    merged = {f["name"]: f for f in previous}
    merged.update({f.name: f.to_json() for f in folds})
    return list(merged.values())


def run_folds(config: RunConfig, manifest: Manifest) -> list[Fold]:
    folds = manifest.folds if config.select == "valid" else select_on_test(manifest.folds)
    return pick_folds(folds, config.folds)


def prepare(config: RunConfig, console: Console) -> PreparedData:
    manifest = load_manifest(config)
    feature_config = config.feature_config()
    with progress_bar(console) as progress:
        task = progress.add_task(f"features ({feature_config.kind})", total=len(manifest))
        matrix, manifest, cache = feature_matrix(
            manifest, feature_config, config.skip_bad, lambda n: progress.advance(task, n)
        )
    for note in manifest.notes:
        console.print(f"[yellow]{note}")
    console.print(f"features: {cache.computed} computed, {cache.reused} from cache ({cache.folder})")
    return PreparedData(
        manifest,
        torch.from_numpy(matrix).unsqueeze(1),
        torch.from_numpy(manifest.label_ids()),
        run_folds(config, manifest),
        manifest.data_hash(),
    )


def fold_indices(manifest: Manifest, fold: Fold) -> dict[str, np.ndarray]:
    speakers = np.array([u.speaker for u in manifest.utterances])
    return {part: np.flatnonzero(np.isin(speakers, getattr(fold, part))) for part in ("train", "valid", "test")}


def check_fold(manifest: Manifest, fold: Fold, parts: dict[str, np.ndarray], console: Console) -> list[str]:
    """Refuse a fold that cannot be trained or selected; return the classes absent from its test set."""
    labels = manifest.labels
    targets = manifest.label_ids()
    missing_train = [labels[c] for c in range(len(labels)) if not np.any(targets[parts["train"]] == c)]
    if missing_train:
        raise SerkdError(f"fold {fold.name}: class(es) {', '.join(missing_train)} absent from the training speakers")
    absent_test = [labels[c] for c in range(len(labels)) if not np.any(targets[parts["test"]] == c)]
    if absent_test:
        console.print(f"[yellow]fold {fold.name}: class(es) {', '.join(absent_test)} absent from the test set; "
                      "UA is over the classes present")
    if len(parts["valid"]) == 0:
        raise SerkdError(f"fold {fold.name}: no validation utterances")
    return absent_test


def _teacher_for(config: RunConfig, data: PreparedData, console: Console) -> dict[str, tuple[np.ndarray, list]]:
    """Per fold, the teacher logits aligned with the manifest; refuse leaky teachers unless allowed."""
    if not config.teacher:
        return {}
    store = Path(config.teacher)
    if not store.is_dir():
        raise SerkdError(f"{store}: teacher outputs folder not found")
    found = {}
    utt_ids = [u.utt_id for u in data.manifest.utterances]
    for fold in data.folds:
        outputs = teacher_outputs.read_fold(store, fold.name)
        if outputs.meta.get("labels") and outputs.meta["labels"] != data.manifest.labels:
            raise SerkdError(
                f"{store / fold.name}: teacher labels {outputs.meta['labels']} differ from the corpus' "
                f"{data.manifest.labels}"
            )
        leaked = teacher_outputs.leak(outputs, fold.test)
        if leaked and not config.allow_leaky_teacher:
            why = ("is not fold-clean (" + outputs.meta.get("provenance", "unknown provenance") + ")"
                   if not outputs.meta.get("fold_clean", True) else f"trained on test speaker(s) {', '.join(leaked)}")
            raise SerkdError(
                f"{store / fold.name}: teacher {why} of fold {fold.name}; refusing to distil "
                "(--allow-leaky-teacher overrides and marks results leaky-teacher)"
            )
        if leaked:
            console.print(f"[yellow]fold {fold.name}: teacher saw test speaker(s) {', '.join(leaked)}: "
                          f"results marked {MARK_LEAKY_TEACHER}")
        found[fold.name] = (outputs.aligned(utt_ids, store / fold.name), leaked)
    return found


def run(config: RunConfig, out: str | Path, console: Console | None = None, teacher_out: str | Path | None = None):
    """Train one model per fold; return the per-fold result dicts."""
    console = console or Console(stderr=True)
    out = Path(out)
    loss_fn = make_loss(config.method, config.method_params)
    if getattr(loss_fn, "needs_teacher", False) and not config.teacher:
        raise SerkdError(f"method {config.method!r} needs teacher outputs: pass --teacher DIR")
    if config.teacher and not getattr(loss_fn, "needs_teacher", False):
        console.print(f"[yellow]method {config.method!r} uses no teacher: --teacher {config.teacher} is ignored")
    check_options(config)
    _check_out(out, config)
    data = prepare(config, console)
    teachers = _teacher_for(config, data, console)
    labels = data.manifest.labels
    device = pick_device(config.device)
    record = {
        "config": asdict(config),
        "role": "teacher" if teacher_out else "student",
        "features": config.feature_config().to_json(),
        "labels": labels,
        "data_hash": data.data_hash,
        "corpus_counts": data.manifest.counts(),
        "folds": _fold_union(out, data.folds),
        "device": str(device),
        "provenance": provenance(),
    }
    atomic_write_json(out / "run.json", record)
    results = []
    for fold in data.folds:
        results.append(
            _run_fold(config, data, fold, teachers.get(fold.name), loss_fn, device, out, record, console, teacher_out)
        )
    return results


def _run_fold(config, data, fold, teacher, loss_fn, device, out, record, console, teacher_out) -> dict:
    labels = data.manifest.labels
    parts = fold_indices(data.manifest, fold)
    targets = data.targets.numpy()
    absent_test = check_fold(data.manifest, fold, parts, console)
    teacher_key = _teacher_key(record, fold) if teacher_out else None
    if teacher_key and teacher_outputs.cached(teacher_out, fold.name, teacher_key, data.data_hash) and (
            out / fold.name / "results.json").is_file():
        console.print(f"fold {fold.name}: cached (same config and data)")
        return read_json(out / fold.name / "results.json")

    torch.manual_seed(config.seed)
    model = models.create(config.student, num_classes=len(labels), **_model_options(config))
    teacher_logits = torch.from_numpy(teacher[0]) if teacher else None
    started = time.perf_counter()
    with progress_bar(console) as progress:
        task = progress.add_task(f"{fold.name} {config.student}/{config.method}", total=config.epochs)

        def on_epoch(rec: dict) -> None:
            progress.update(task, advance=1, description=(
                f"{fold.name} {config.student}/{config.method} valid UA {100 * rec['valid_ua']:.1f}"))

        result = fit(model, loss_fn, data.features, data.targets, parts["train"], parts["valid"],
                     config.fit_config(), teacher_logits, device, on_epoch)
    seconds = time.perf_counter() - started
    test_pred = predict_logits(model, data.features, parts["test"], device).argmax(axis=1)
    wa, ua = wa_ua(targets[parts["test"]], test_pred)
    best = result.history[result.best_epoch - 1]
    marks = ([MARK_TEST_SELECTED] if fold.selection == "test" else []) + (
        [MARK_LEAKY_TEACHER] if teacher and teacher[1] else [])
    summary = {
        "fold": fold.name, "test": list(fold.test), "valid": list(fold.valid),
        "wa": wa, "ua": ua, "valid_wa": best["valid_wa"], "valid_ua": best["valid_ua"],
        "best_epoch": result.best_epoch, "epochs": config.epochs, "selection": fold.selection, "marks": marks,
        "n_train": len(parts["train"]), "n_valid": len(parts["valid"]), "n_test": len(parts["test"]),
        "absent_test_classes": absent_test, "labels": labels,
        "confusion": confusion(targets[parts["test"]], test_pred, len(labels)),
        "corpus": config.corpus, "student": config.student, "method": config.method,
        "method_params": config.method_params, "features": config.features, "teacher": config.teacher,
        "seed": config.seed, "data_hash": data.data_hash, "git_commit": record["provenance"]["git_commit"],
        "train_seconds": round(seconds, 2), "history": result.history,
    }
    fold_dir = out / fold.name
    save_checkpoint(fold_dir, model, {
        "model": config.student, "model_options": _model_options(config), "labels": labels,
        "features": record["features"], "fold": fold.to_json(), "config": record["config"],
        "data_hash": data.data_hash, "provenance": record["provenance"], "best_epoch": result.best_epoch,
    })
    if teacher_out:
        all_logits = predict_logits(model, data.features, np.arange(len(data.manifest)), device)
        teacher_outputs.write_fold(Path(teacher_out), fold.name, [u.utt_id for u in data.manifest.utterances],
                                   all_logits, {
            "teacher": config.student, "provenance": "trained", "fold_clean": fold.selection == "valid",
            "train_speakers": list(fold.train), "valid_speakers": list(fold.valid), "test_speakers": list(fold.test),
            "labels": labels, "data_hash": data.data_hash, "valid_wa": best["valid_wa"], "valid_ua": best["valid_ua"],
            "selection": fold.selection, "features": record["features"], "git_commit": summary["git_commit"],
            "config_hash": teacher_key,
        })
    if config.tensorboard:
        _write_curves(out / "tensorboard" / fold.name, result.history, wa, ua)
    atomic_write_json(fold_dir / "results.json", summary)
    console.print(f"{fold.name}: test WA {100 * wa:.2f}  UA {100 * ua:.2f}  (best epoch {result.best_epoch} "
                  f"on {'test' if fold.selection == 'test' else 'validation'} UA, {seconds:.1f} s)")
    return summary


def _write_curves(folder: Path, history: list[dict], test_wa: float, test_ua: float) -> None:
    """Curves are written once the fold is done, so TensorBoard costs the training loop nothing."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(folder)) as writer:
        for record in history:
            for key in ("train_loss", "valid_wa", "valid_ua", "lr"):
                writer.add_scalar(key, record[key], record["epoch"])
        writer.add_scalar("test_wa_at_best", test_wa, 0)
        writer.add_scalar("test_ua_at_best", test_ua, 0)


def _teacher_key(record: dict, fold: Fold) -> str:
    # where the corpus lies, the device and how folds were picked change no output: data hash and fold say it
    ignored = ("root", "device", "folds", "skip_bad", "tensorboard")
    config = {k: v for k, v in record["config"].items() if k not in ignored}
    return teacher_outputs.config_hash({"config": config, "features": record["features"], "fold": fold.to_json(),
                                        "labels": record["labels"]})


def _model_options(config: RunConfig) -> dict:
    return {"seed_softmax": True} if config.seed_softmax and config.student == "lightsernet" else {}


def progress_bar(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), console=console, transient=True)
