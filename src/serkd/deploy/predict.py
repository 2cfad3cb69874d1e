"""Run an exported graph on audio files: any sample rate or channel count, read and resampled outside the
graph by :func:`serkd.data.audio.load_audio`; the graph does the rest (crop, features, student, softmax).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from serkd.data.audio import load_audio
from serkd.errors import BadInputError, SerkdError

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".w64", ".caf", ".opus"})


def session(model: str | Path | bytes, threads: int | None = None) -> ort.InferenceSession:
    """A CPU session; ``threads`` intra-op threads (None: onnxruntime's default, all cores)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initialisers etc. are noise to a user
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


class OnnxClassifier:
    """An exported serkd graph with its labels and sample rate read from the ONNX metadata."""

    def __init__(self, path: str | Path, threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise SerkdError(f"{self.path}: model file not found")
        try:
            self.session = session(self.path, threads)
        except Exception as exc:  # onnxruntime raises its own types for unreadable or invalid graphs
            raise SerkdError(f"{self.path}: not a loadable ONNX model ({str(exc).strip().splitlines()[0]})") from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        try:
            self.labels: list[str] = json.loads(self.metadata["labels"])
            self.sample_rate = int(self.metadata["sample_rate"])
        except (KeyError, ValueError):
            raise SerkdError(f"{self.path}: no serkd metadata (labels, sample_rate): export it with serkd export") \
                from None
        self.input = self.session.get_inputs()[0].name

    def probs(self, wave: np.ndarray) -> np.ndarray:
        """Class probabilities of one mono waveform at ``sample_rate``."""
        return self.session.run(None, {self.input: np.ascontiguousarray(wave, dtype=np.float32)[None]})[0][0]

    def predict_file(self, path: str | Path) -> dict:
        probs = self.probs(load_audio(path, self.sample_rate))
        return {"path": str(path), "label": self.labels[int(np.argmax(probs))],
                "probs": {label: float(p) for label, p in zip(self.labels, probs)}}


def expand(inputs: Sequence[str | Path]) -> tuple[list[Path], list[BadInputError]]:
    """Files as given, folders as their audio files (recursively, sorted); an empty folder is a problem."""
    files: list[Path] = []
    problems: list[BadInputError] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                problems.append(BadInputError(item, "folder has no audio files"))
            files += found
        else:
            files.append(item)  # a missing or bad file is reported when it is read
    return files, problems


def predict(model: OnnxClassifier, inputs: Sequence[str | Path]) -> tuple[list[dict], list[BadInputError]]:
    """Predictions for every readable file and the problems of the others (bad files do not stop the rest)."""
    files, problems = expand(inputs)
    results = []
    for path in files:
        try:
            results.append(model.predict_file(path))
        except BadInputError as problem:
            problems.append(problem)
    return results, problems


def evaluate(model: OnnxClassifier, items: Iterable[tuple[str | Path, int]]) -> dict:
    """WA / UA of the graph on (audio path, label id) pairs (label ids in the model's label order)."""
    from serkd.train.metrics import wa_ua

    targets, predictions = [], []
    for path, label in items:
        targets.append(label)
        predictions.append(int(np.argmax(model.probs(load_audio(path, model.sample_rate)))))
    if not targets:
        raise SerkdError(f"{model.path}: no utterances to evaluate")
    wa, ua = wa_ua(np.array(targets), np.array(predictions))
    return {"wa": float(wa), "ua": float(ua), "n": len(targets), "predictions": predictions}


def fold_test_items(kind: str, root: str | Path, speakers: Sequence[str], labels: Sequence[str],
                    skip_bad: bool = False, **options) -> list[tuple[Path, int]]:
    """(path, label id) of a corpus' utterances by ``speakers``, refusing a corpus with other labels."""
    from serkd.data.corpora import load_corpus

    manifest = load_corpus(kind, root, **options).raise_problems(skip_bad)
    if list(manifest.labels) != list(labels):
        raise SerkdError(f"{root}: corpus labels {manifest.labels} differ from the model's {list(labels)}")
    ids = manifest.label_ids()
    wanted = set(speakers)
    items = [(u.path, int(ids[i])) for i, u in enumerate(manifest.utterances) if u.speaker in wanted]
    if not items:
        raise SerkdError(f"{root}: no utterances by the fold's test speaker(s) {', '.join(speakers) or '(none)'}")
    return items
