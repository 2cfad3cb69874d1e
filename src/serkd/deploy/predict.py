"""Run an exported graph on audio files: any sample rate or channel count, read and resampled outside the
graph by :func:`serkd.data.audio.load_audio`; the graph does the rest (crop, features, student, softmax).

Long audio: :func:`predict` with ``window`` (seconds) cuts each file into windows every ``hop`` seconds
(the last one aligned to the file's end) and returns a timeline of per-window predictions; the file's
label is the argmax of the mean of the window probabilities. A clip shorter than ``min_seconds`` gets a
warning instead of a silent, confident-looking guess.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from serkd.data.audio import load_audio
from serkd.errors import BadInputError, SerkdError

log = logging.getLogger(__name__)

BATCH_WINDOWS = 32  # windows per graph call: bounds memory for hours of audio, amortises the call overhead
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
        first = self.session.get_inputs()[0]
        self.input = first.name
        # serkd export makes the batch axis dynamic (a name, not a number); a graph fixed at 1 runs row by row
        self.batched = not (first.shape and isinstance(first.shape[0], int) and first.shape[0] == 1)

    def probs(self, wave: np.ndarray) -> np.ndarray:
        """Class probabilities of one mono waveform at ``sample_rate``."""
        return self.session.run(None, {self.input: np.ascontiguousarray(wave, dtype=np.float32)[None]})[0][0]

    def probs_rows(self, waves: np.ndarray) -> np.ndarray:
        """Class probabilities of each row of a (rows, samples) array (equal lengths), batched when the graph
        allows it, ``BATCH_WINDOWS`` rows per call."""
        waves = np.ascontiguousarray(waves, dtype=np.float32)
        if not self.batched:
            return np.stack([self.probs(row) for row in waves])
        return np.concatenate([self.session.run(None, {self.input: waves[i : i + BATCH_WINDOWS]})[0]
                               for i in range(0, len(waves), BATCH_WINDOWS)])

    def predict_file(self, path: str | Path) -> dict:
        """``{"path", "label", "probs"}`` of one file (whole clip, no short-clip check): see :func:`predict_file`."""
        return predict_file(self, path, min_seconds=0)


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


def window_starts(n_samples: int, window: int, hop: int) -> list[int]:
    """First sample of each window: every ``hop`` samples, the last window ending at the last sample; a signal
    no longer than one window is one window starting at 0."""
    if n_samples <= window:
        return [0]
    return [*range(0, n_samples - window, hop), n_samples - window]


def check_window(window: float | None, hop: float | None, min_seconds: float) -> None:
    """The window options, checked before any file is read (messages name the options)."""
    if window is None:
        if hop is not None:
            raise SerkdError("hop: only applies with a window")
    elif not window > 0:
        raise SerkdError(f"window: must be a positive number of seconds, got {window}")
    if hop is not None and not hop > 0:
        raise SerkdError(f"hop: must be a positive number of seconds, got {hop}")
    if not min_seconds >= 0:
        raise SerkdError(f"min_seconds: must be zero or more, got {min_seconds}")


def predict_file(classifier: OnnxClassifier, path: str | Path, window: float | None = None,
                 hop: float | None = None, min_seconds: float = 0.5) -> dict:
    """``{"path", "label", "probs"}`` of one file, plus ``"timeline"`` with a window and ``"warning"`` for a
    clip shorter than ``min_seconds``. See :func:`predict`."""
    wave = load_audio(path, classifier.sample_rate)
    rate = classifier.sample_rate
    labels = classifier.labels
    timeline = None
    if window is None:
        probs = classifier.probs(wave)
    else:
        size = max(1, round(window * rate))
        step = max(1, round((hop or window) * rate))
        starts = window_starts(len(wave), size, step)
        rows = classifier.probs_rows(np.stack([wave[s : s + size] for s in starts]))
        probs = rows.mean(axis=0)
        timeline = [
            {"start": round(s / rate, 3), "end": round(min(s + size, len(wave)) / rate, 3),
             "label": labels[int(np.argmax(row))], "probs": {label: float(p) for label, p in zip(labels, row)}}
            for s, row in zip(starts, rows)]
    result = {"path": str(path), "label": labels[int(np.argmax(probs))],
              "probs": {label: float(p) for label, p in zip(labels, probs)}}
    if timeline is not None:
        result["timeline"] = timeline
    seconds = len(wave) / rate
    if seconds < min_seconds:
        result["warning"] = (f"{path}: only {seconds:.2f} s of audio (less than {min_seconds:g} s): "
                             "the prediction is unreliable")
        log.warning(result["warning"])
    return result


def predict(classifier: OnnxClassifier, paths: Sequence[str | Path], window: float | None = None,
            hop: float | None = None, min_seconds: float = 0.5) -> tuple[list[dict], list[BadInputError]]:
    """Predictions for every readable file and the problems of the others (bad files do not stop the rest).

    Each result is ``{"path", "label", "probs": {label: p}}``. With ``window`` (seconds), the file is cut
    into windows of that length every ``hop`` seconds (default: ``window``, back to back), the last window
    aligned to the file's end (a file no longer than the window is one window), and the result gains
    ``"timeline": [{"start", "end", "label", "probs"}]`` (seconds); its ``label``/``probs`` are then the
    mean of the window probabilities and its argmax. Windows of a file run through the graph in batches.
    A clip shorter than ``min_seconds`` still gets a prediction, plus ``"warning": "..."`` (also logged,
    once per file). The graph crops each input to its training length (centre crop), so a window longer
    than that length is judged on its centre only.
    """
    check_window(window, hop, min_seconds)
    files, problems = expand(paths)
    results = []
    for path in files:
        try:
            results.append(predict_file(classifier, path, window, hop, min_seconds))
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
