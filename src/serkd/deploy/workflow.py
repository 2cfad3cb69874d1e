"""Export -> (int8) -> evaluate: the deploy workflow behind ``serkd export``, as one library call."""

from __future__ import annotations

import json
from pathlib import Path

from serkd.errors import SerkdError
from serkd.train.checkpoint import META


def check_fold_dir(fold_dir: Path) -> None:
    """A run folder given where a fold folder is wanted: name its folds instead of failing obscurely."""
    fold_dir = Path(fold_dir)
    if (fold_dir / META).is_file():
        return
    folds = sorted(p.parent.name for p in fold_dir.glob(f"*/{META}")) if fold_dir.is_dir() else []
    if folds:
        raise SerkdError(f"{fold_dir}: a run folder; export one of its folds: "
                         + ", ".join(str(fold_dir / f) for f in folds))
    raise SerkdError(f"{fold_dir}: not a fold folder (needs {META} and model.safetensors)")


def calibration_waves(fold_dir: Path, corpus: str, root: str | Path, labels: list[str], skip_bad: bool = False,
                      corpus_options: dict | None = None, clips: int | None = None) -> list:
    """Waveforms of up to ``clips`` of the fold's training utterances, spread evenly over them (static int8)."""
    import numpy as np

    from serkd.data.audio import load_audio
    from serkd.deploy.predict import fold_test_items
    from serkd.deploy.quantize import CALIBRATION_CLIPS
    from serkd.io import read_json

    train = (read_json(fold_dir / META).get("fold") or {}).get("train") or []
    items = fold_test_items(corpus, root, train, labels, skip_bad, **(corpus_options or {}))
    picked = np.linspace(0, len(items) - 1, min(clips or CALIBRATION_CLIPS, len(items))).round().astype(int)
    return [load_audio(items[i][0]) for i in sorted(set(picked.tolist()))]


def export_and_evaluate(fold_dir: str | Path, out: str | Path, int8: bool = False, corpus: str | None = None,
                        root: str | Path | None = None, skip_bad: bool = False,
                        corpus_options: dict | None = None, int8_static: bool = False) -> dict:
    """Write the fp32 graph (and the int8 ones), then, given a corpus, WA/UA of each on the fold's test speakers.

    ``int8``: int8 weights, ``OUT.int8.onnx``; ``int8_static``: static int8 (QDQ) calibrated on the fold's
    training utterances, ``OUT.int8-static.onnx`` (needs the corpus). Returns ``{"fold_dir", "graphs":
    {"fp32"|"int8"|"int8_static": {"path", "bytes"[, "wa", "ua", "n_test"]}}, "max_prob_difference",
    "metadata"[, "test_speakers"]}``.
    """
    from serkd.deploy.export import export
    from serkd.deploy.predict import OnnxClassifier, evaluate, fold_test_items
    from serkd.deploy.quantize import quantize_int8, quantize_int8_static

    if (corpus is None) != (root is None):
        raise SerkdError("corpus and root go together")
    if int8_static and not corpus:
        raise SerkdError("static int8 calibrates on the fold's training utterances: give the corpus and root")
    fold_dir, out = Path(fold_dir), Path(out)
    check_fold_dir(fold_dir)
    if corpus:
        from serkd.io import read_json

        if not (read_json(fold_dir / META).get("fold") or {}).get("test"):
            raise SerkdError(f"{fold_dir}: a final model, trained on every speaker: no test speakers to score it on "
                             "(its cross-validation scores are in checkpoint.json and the graph's cv_scores; serkd "
                             "eval scores it on another corpus)")
    result = export(fold_dir, out)
    graphs = {"fp32": {"path": str(result.path), "bytes": result.size_bytes}}
    if int8:
        int8_path = out.with_suffix(".int8.onnx")
        sizes = quantize_int8(out, int8_path)
        graphs["int8"] = {"path": str(int8_path), "bytes": sizes["int8_bytes"]}
    if int8_static:
        static_path = out.with_suffix(".int8-static.onnx")
        waves = calibration_waves(fold_dir, corpus, root, json.loads(result.metadata["labels"]), skip_bad,
                                  corpus_options)
        sizes = quantize_int8_static(out, static_path, waves)
        graphs["int8_static"] = {"path": str(static_path), "bytes": sizes["int8_bytes"],
                                 "calibration_clips": sizes["calibration_clips"]}
    summary = {"fold_dir": str(fold_dir), "graphs": graphs, "max_prob_difference": result.max_prob_difference,
               "metadata": result.metadata}
    if corpus:
        speakers = json.loads(result.metadata["source_test_speakers"])
        items = fold_test_items(corpus, root, speakers, json.loads(result.metadata["labels"]), skip_bad,
                                **(corpus_options or {}))
        for graph in graphs.values():
            scores = evaluate(OnnxClassifier(graph["path"]), items)
            graph.update(wa=scores["wa"], ua=scores["ua"], n_test=scores["n"])
        summary["test_speakers"] = speakers
    return summary
