"""How good a teacher outputs store is: per fold, WA/UA of the argmax of its stored logits on the fold's test
speakers, then mean ± std over folds, in the JSON shape of ``serkd report`` (rows + summary).

A fold-clean teacher's numbers are held-out results; a leaky one's (the seed's shipped logits) are
marked ``leaky-teacher``: they measure what the teacher saw, not how it generalises.
"""

from __future__ import annotations

from pathlib import Path

from serkd.data.manifest import Manifest
from serkd.data.protocol import fold_indices
from serkd.data.teacher_outputs import folds_in, leak, read_fold
from serkd.errors import SerkdError
from serkd.experiments.report import summarise
from serkd.train.metrics import confusion, wa_ua
from serkd.train.results import MARK_LEAKY_TEACHER, MARK_TEST_SELECTED, FoldResult


def evaluate(store: str | Path, manifest: Manifest) -> dict:
    """``{"rows": [per fold], "summary": [mean ± std]}`` for the folds the store holds, in corpus fold order."""
    store = Path(store)
    held = set(folds_in(store)) if store.is_dir() else set()
    if not held:
        raise SerkdError(f"{store}: no teacher outputs (expected {store}/<fold>/outputs.json)")
    folds = [f for f in manifest.folds if f.name in held]
    unknown = sorted(held - {f.name for f in folds})
    if unknown:
        raise SerkdError(f"{store}: fold(s) {', '.join(unknown)} are not folds of this {manifest.corpus} corpus "
                         f"(its folds: {', '.join(f.name for f in manifest.folds)})")
    targets = manifest.label_ids()
    utt_ids = [u.utt_id for u in manifest.utterances]
    rows = []
    for fold in folds:
        outputs = read_fold(store, fold.name)
        if outputs.meta.get("labels") and outputs.meta["labels"] != manifest.labels:
            raise SerkdError(f"{store / fold.name}: teacher labels {outputs.meta['labels']} differ from the "
                             f"corpus' {manifest.labels}")
        test = fold_indices(manifest, fold)["test"]
        if len(test) == 0:
            raise SerkdError(f"fold {fold.name}: no test utterances of speaker(s) {', '.join(fold.test)}")
        predictions = outputs.aligned([utt_ids[i] for i in test], store / fold.name).argmax(axis=1)
        wa, ua = wa_ua(targets[test], predictions)
        selection = outputs.meta.get("selection")
        marks = ([MARK_TEST_SELECTED] if selection == "test" else []) + (
            [MARK_LEAKY_TEACHER] if leak(outputs, fold.test) else [])
        result = FoldResult(
            fold=fold.name, test=list(fold.test), valid=list(fold.valid), wa=wa, ua=ua, labels=list(manifest.labels),
            confusion=confusion(targets[test], predictions, len(manifest.labels)), corpus=manifest.corpus,
            student=outputs.meta.get("teacher"), method="teacher",
            features=(outputs.meta.get("features") or {}).get("kind"), role="teacher",
            best_epoch=outputs.meta.get("best_epoch"), selection=selection, marks=marks, n_test=len(test),
            absent_test_classes=sorted(set(manifest.labels) - {manifest.labels[t] for t in targets[test]},
                                       key=manifest.labels.index),
            teacher=str(store), data_hash=outputs.meta.get("data_hash"), config_hash=outputs.meta.get("config_hash"),
            extra={"provenance": outputs.meta.get("provenance"), "fold_clean": outputs.meta.get("fold_clean", True)})
        rows.append({"run": str(store), **result.to_json()})
    return {"rows": rows, "summary": summarise(rows)}
