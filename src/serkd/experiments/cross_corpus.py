"""Cross-corpus evaluation: every model of a run (its fold models, and its final model if present) scored on
another corpus, over the classes both corpora share, in the JSON shape of ``serkd report``.

    report = evaluate_run("runs/emodb-ce", "ravdess", "/data/RAVDESS", label_map={"calm": "neutral"})

Classes are matched **by name** (serkd's readers share names: anger, happiness, sadness, neutral, fear,
disgust, boredom, calm, surprise); ``label_map`` renames the other corpus' classes onto the run's first
(``{"angry": "anger"}``). Utterances of classes the run never learnt are left out (they are listed under
``unused_eval_classes``), and a model's prediction is the argmax over the **shared classes only**: a model
cannot be right about a class the other corpus does not have, and letting it answer "boredom" on a corpus
without boredom would only measure the class mismatch. WA/UA as everywhere (UA over the shared classes
present). Every row is a :class:`serkd.train.results.FoldResult` marked ``cross-corpus`` (with the fold's
own marks, e.g. ``test-selected``), ``corpus`` naming the corpus it was scored on, ``in_domain_ua`` the fold's
own test UA beside it; the summary gives the fold models' mean ± std (and ``in_domain_ua_mean``) and the final
model on its own row.

``run_dir`` may also be a grid's output folder: every unit's run folder (``OUT/runs/<unit>/``) is scored, each
kept apart in the summary. A label map onto a class the run never learnt, or from a class the other corpus does
not have, is refused: it would silently leave those utterances out.

Features come from the run's feature config (length included) through the memory-mapped store, so a
second evaluation of the same corpus computes nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from serkd.data.corpora import load_corpus
from serkd.data.features import FeatureConfig
from serkd.data.normalize import for_checkpoint
from serkd.data.store import feature_store
from serkd.errors import SerkdError
from serkd.experiments.report import GROUP_KEYS, members_of, summarise
from serkd.io import read_json
from serkd.layout import DB_NAME, FINAL, GRID_RUNS, RESULTS
from serkd.train.checkpoint import META, load_checkpoint
from serkd.train.events import Emitter, OnEvent
from serkd.train.loop import pick_device, predict_logits
from serkd.train.metrics import confusion, wa_ua
from serkd.train.results import FoldResult

MARK_CROSS_CORPUS = "cross-corpus"
# fold models and the final model, and each run folder of a grid, are summarised apart
SUMMARY_KEYS = (*GROUP_KEYS, "run")


def parse_label_map(text: str | None) -> dict[str, str]:
    """``"angry=anger,calm=neutral"`` -> ``{"angry": "anger", "calm": "neutral"}`` (the other corpus' name first)."""
    mapping = {}
    for pair in (text or "").split(","):
        if not pair.strip():
            continue
        source, sep, target = pair.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise SerkdError(f"label map expects other=run pairs separated by commas, got {pair.strip()!r}")
        mapping[source.strip()] = target.strip()
    return mapping


def model_dirs(run_dir: str | Path) -> list[Path]:
    """The run's fold model folders in name order, then ``final`` if the run has one."""
    run_dir = Path(run_dir)
    folders = sorted(p.parent for p in run_dir.glob(f"*/{META}") if p.parent.name != FINAL)
    if (run_dir / FINAL / META).is_file():
        folders.append(run_dir / FINAL)
    if not folders:
        raise SerkdError(f"{run_dir}: no trained models (expected {run_dir}/<fold>/{META})")
    return folders


def run_folders(path: str | Path) -> list[Path]:
    """The run folders ``path`` stands for: itself if it holds models, else the run folders inside it (a grid's
    output folder ``OUT``, its ``OUT/results.db``, or ``OUT/runs``: every unit's run folder), in name order."""
    path = Path(path)
    if path.name == DB_NAME and path.is_file():
        path = path.parent
    if _has_models(path):
        return [path]
    inside = path / GRID_RUNS if (path / GRID_RUNS).is_dir() else path
    units = sorted(p for p in inside.iterdir() if p.is_dir() and _has_models(p)) if inside.is_dir() else []
    if units:
        return units
    why = "no such folder" if not path.exists() else "no trained models"
    raise SerkdError(f"{path}: {why}; pass a run folder ({path}/<fold>/{META}) or a grid's output folder "
                     f"({path}/{GRID_RUNS}/<unit>/<fold>/{META})")


def _has_models(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob(f"*/{META}"))


def check_label_map(label_map: dict[str, str], run_labels: list[str], run_dir: Path) -> None:
    """A map onto a class the run never learnt would silently drop those utterances: refuse it."""
    unknown = sorted({target for target in label_map.values() if target not in run_labels})
    if unknown:
        raise SerkdError(f"label map: {', '.join(unknown)} not a class of the run {run_dir} "
                         f"(its classes: {', '.join(run_labels)})")


def evaluate_run(run_dir: str | Path, corpus: str, root: str | Path, label_map: dict[str, str] | None = None,
                 corpus_options: dict | None = None, skip_bad: bool = False, device: str = "cpu",
                 on_event: OnEvent | None = None) -> dict:
    """``{"rows": [one per model], "summary": [...], "shared_classes", "unused_eval_classes", ...}``.

    ``run_dir`` is a run folder or a grid's output folder (every unit run folder in it is scored; the summary
    keeps each run apart)."""
    emit = Emitter(on_event)
    label_map = dict(label_map or {})
    runs = []
    for run in run_folders(run_dir):
        folders = model_dirs(run)
        first = read_json(folders[0] / META)
        check_label_map(label_map, list(first["labels"]), run)
        runs.append((run, folders, first))
    manifest = load_corpus(corpus, root, **(corpus_options or {})).raise_problems(skip_bad)
    unknown = sorted(set(label_map) - set(manifest.labels))
    if unknown:
        raise SerkdError(f"label map: {', '.join(unknown)} not a class of the {corpus} corpus at {root} "
                         f"(its classes: {', '.join(manifest.labels)})")
    scored = [_score_run(run, folders, first, manifest, corpus, root, label_map, skip_bad, device, emit,
                         prefix=f"{run.name}/" if len(runs) > 1 else "")
              for run, folders, first in runs]
    rows = [row for run_rows, _ in scored for row in run_rows]
    for row in rows:
        row.pop("history", None)
    summary = summarise(rows, SUMMARY_KEYS)
    for entry in summary:
        own = [m["in_domain_ua"] for m in members_of(entry, rows, SUMMARY_KEYS)
               if m.get("in_domain_ua") is not None]
        entry["in_domain_ua_mean"] = float(np.mean(own)) if own else None
    first_info = scored[0][1]
    return {"rows": rows, "summary": summary, "protocol": MARK_CROSS_CORPUS,
            "train_corpus": ", ".join(dict.fromkeys(str(info["train_corpus"]) for _, info in scored)),
            "eval_corpus": corpus, "runs": [str(run) for run, _, _ in runs],
            "shared_classes": list(dict.fromkeys(c for _, info in scored for c in info["shared_classes"])),
            "unused_eval_classes": [c for c in manifest.labels
                                    if all(c in info["unused_eval_classes"] for _, info in scored)],
            "label_map": label_map, "n_utterances": first_info["n_utterances"]}


def _score_run(run_dir: Path, folders: list[Path], first: dict, manifest, corpus: str, root: str | Path,
               label_map: dict[str, str], skip_bad: bool, device: str, emit: Emitter,
               prefix: str = "") -> tuple[list[dict], dict]:
    """One run folder's models on the other corpus: its rows and what was shared."""
    run_labels = list(first["labels"])
    features = first["features"]
    feature_config = FeatureConfig(features["kind"], int(features["length"]), int(features.get("sample_rate", 16000)),
                                   dict(features.get("params") or {}))
    train_corpus = (first.get("config") or {}).get("corpus")
    mapped = {name: label_map.get(name, name) for name in manifest.labels}
    shared = [name for name in run_labels if name in mapped.values()]
    if not shared:
        raise SerkdError(f"{root}: no class of the {corpus} corpus ({', '.join(manifest.labels)}) is a class of the "
                         f"run ({', '.join(run_labels)}); map names with the label map (other=run)")
    unused = [name for name in manifest.labels if mapped[name] not in run_labels]
    keep = [i for i, u in enumerate(manifest.utterances) if mapped[u.label] in run_labels]
    manifest = manifest.subset(keep)
    advance = emit.task("features", f"features of {corpus} ({feature_config.kind})", len(manifest))
    matrix, manifest, info = feature_store(manifest, feature_config, skip_bad, advance)
    emit.done("features")
    emit.info(info.line())
    run_index = {name: i for i, name in enumerate(run_labels)}
    targets = np.array([run_index[mapped[u.label]] for u in manifest.utterances], dtype=np.int64)
    shared_ids = np.array([run_index[name] for name in shared])
    present = {run_labels[t] for t in targets}
    where = pick_device(device)
    rows = []
    for folder in folders:
        model, meta = load_checkpoint(folder)
        if list(meta["labels"]) != run_labels or meta.get("features") != first.get("features"):
            raise SerkdError(f"{folder}: its labels or features differ from {folders[0]}'s: not one run")
        features = for_checkpoint(meta.get("normalization"), feature_config, matrix, manifest)  # as in training
        logits = predict_logits(model.to(where), features, np.arange(len(manifest)), where)
        predictions = shared_ids[logits[:, shared_ids].argmax(axis=1)]
        wa, ua = wa_ua(targets, predictions)
        fold = meta.get("fold") or {}
        own = read_json(folder / RESULTS) if (folder / RESULTS).is_file() else {}
        config = meta.get("config") or {}
        is_final = folder.name == FINAL and "cv" in meta
        result = FoldResult(
            fold=folder.name, test=[f"{corpus}: all {len(manifest.speakers)} speakers"],
            valid=list(fold.get("valid", [])), wa=wa, ua=ua, labels=run_labels,
            confusion=confusion(targets, predictions, len(run_labels)), corpus=corpus,
            student=meta.get("model"), method=config.get("method", "ce"), features=feature_config.kind,
            best_epoch=meta.get("best_epoch") or meta.get("epochs"), epochs=config.get("epochs"),
            selection=fold.get("selection"), marks=[MARK_CROSS_CORPUS, *own.get("marks", [])], n_test=len(manifest),
            absent_test_classes=[name for name in run_labels if name not in present],
            method_params=config.get("method_params") or {}, teacher=config.get("teacher"), seed=config.get("seed"),
            data_hash=meta.get("data_hash"),
            extra={"protocol": MARK_CROSS_CORPUS, "model": FINAL if is_final else "fold", "model_dir": str(folder),
                   "train_corpus": train_corpus, "eval_corpus": corpus, "eval_root": str(root),
                   "shared_classes": shared, "label_map": label_map, "unused_eval_classes": unused,
                   "predictions": "argmax over the shared classes", "in_domain_ua": own.get("ua"),
                   "in_domain_wa": own.get("wa")})
        rows.append({"run": str(run_dir), **result.to_json()})
        emit.info(f"{prefix}{folder.name}: {corpus} WA {100 * wa:.2f}  UA {100 * ua:.2f}  ({len(manifest)} utterances, "
                  f"{len(shared)} shared classes)", folder.name)
    return rows, {"train_corpus": train_corpus, "shared_classes": shared, "unused_eval_classes": unused,
                  "n_utterances": len(manifest)}
