"""Run an exported graph on audio files: any sample rate or channel count, read and resampled outside the
graph by :func:`serkd.data.audio.load_audio`; the graph does the rest (features, normalisation, student,
softmax). The graph never crops: whatever it is given is scored whole.

- A file no longer than the model's training length (the feature length, ``training_samples``) is one input.
  A longer one, without ``window``, is scored as windows of the training length, back to back (the last one
  aligned to the end), what the model saw in training; its ``probs`` are their mean and the result says so
  (``"windows"``, ``"note"``).
- With ``window`` (seconds) each file is cut into windows of that length every ``hop`` seconds, each window
  scored whole (a window longer than the training length too), and the result gains a ``"timeline"``; the
  file's label is the argmax of the mean of the window probabilities.
- A clip shorter than ``min_seconds`` is still predicted, but marked ``"unreliable": true`` with its
  ``"reason"`` (the library logs nothing; the CLI says it once).
- A ``speaker``-normalised graph (inputs ``feature_mean`` / ``feature_std``) is fed the speaker's statistics:
  from ``speaker`` (that speaker's clips: files or folders), or else from the files of the call taken as one
  speaker; the graph's moment outputs give them (:func:`speaker_statistics`), and every result says where
  they came from (``"speaker_statistics"``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from serkd.data.audio import load_audio
from serkd.data.statistics import Moments, Statistics
from serkd.errors import BadInputError, SerkdError

BATCH_WINDOWS = 32  # windows per graph call: bounds memory for hours of audio, amortises the call overhead
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".w64", ".caf", ".opus"})
MEAN_INPUT, STD_INPUT = "feature_mean", "feature_std"  # serkd.deploy.export's names (no torch import here)
MOMENT_OUTPUTS = ("frame_count", "feature_sum", "feature_sumsq")


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
    """An exported serkd graph with its labels, sample rate, training length and normalisation read from the
    ONNX metadata."""

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
        features = json.loads(self.metadata.get("features") or "{}")
        self.training_samples: int | None = int(features["length"]) if features.get("length") else None
        self.normalization = json.loads(self.metadata.get("normalization") or "{}")
        first = self.session.get_inputs()[0]
        self.input = first.name
        # serkd export makes the batch axis dynamic (a name, not a number); a graph fixed at 1 runs row by row
        self.batched = not (first.shape and isinstance(first.shape[0], int) and first.shape[0] == 1)
        overridable = {i.name for i in self.session.get_overridable_initializers()}
        names = overridable | {i.name for i in self.session.get_inputs()}
        self.takes_statistics = MEAN_INPUT in names and STD_INPUT in names
        self.output = self.session.get_outputs()[0].name

    def _feeds(self, waves: np.ndarray, statistics: Statistics | None) -> dict:
        feeds = {self.input: np.ascontiguousarray(waves, dtype=np.float32)}
        if statistics is not None and self.takes_statistics:
            feeds.update({MEAN_INPUT: statistics.mean, STD_INPUT: statistics.std})
        return feeds

    def probs(self, wave: np.ndarray, statistics: Statistics | None = None) -> np.ndarray:
        """Class probabilities of one mono waveform at ``sample_rate``, scored whole."""
        return self.session.run([self.output], self._feeds(np.asarray(wave)[None], statistics))[0][0]

    def probs_rows(self, waves: np.ndarray, statistics: Statistics | None = None) -> np.ndarray:
        """Class probabilities of each row of a (rows, samples) array (equal lengths), batched when the graph
        allows it, ``BATCH_WINDOWS`` rows per call."""
        waves = np.ascontiguousarray(waves, dtype=np.float32)
        if not self.batched:
            return np.stack([self.probs(row, statistics) for row in waves])
        return np.concatenate([self.session.run([self.output], self._feeds(waves[i : i + BATCH_WINDOWS],
                                                                          statistics))[0]
                               for i in range(0, len(waves), BATCH_WINDOWS)])

    def moments(self, wave: np.ndarray) -> Moments:
        """Real-frame moments of one waveform's un-normalised features (speaker-normalised graphs only)."""
        if not self.takes_statistics:
            raise SerkdError(f"{self.path}: not a speaker-normalised graph (no {', '.join(MOMENT_OUTPUTS)} outputs)")
        count, total, squares = self.session.run(list(MOMENT_OUTPUTS), self._feeds(np.asarray(wave)[None], None))
        return Moments(round(float(count[0])), total[0].astype(np.float64), squares[0].astype(np.float64))

    def predict_file(self, path: str | Path) -> dict:
        """``{"path", "label", "probs"}`` of one file (no short-clip check): see :func:`predict_file`."""
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


def score_wave(classifier, wave: np.ndarray, window: float | None = None, hop: float | None = None,
               statistics: Statistics | None = None) -> tuple[np.ndarray, dict]:
    """Probabilities of one waveform as :func:`predict` scores it (see the module docstring), and what to add to
    its result: ``timeline`` (with a window), or ``windows`` and ``note`` (a long file without one)."""
    rate = classifier.sample_rate
    labels = classifier.labels
    training = getattr(classifier, "training_samples", None)
    if window is None and (training is None or len(wave) <= training):
        return classifier.probs_rows(wave[None], statistics)[0], {}
    size = max(1, round(window * rate)) if window is not None else training
    step = max(1, round((hop or window) * rate)) if window is not None else training
    starts = window_starts(len(wave), size, step)
    rows = classifier.probs_rows(np.stack([wave[s : s + size] for s in starts]), statistics)
    if window is None:
        return rows.mean(axis=0), {
            "windows": len(starts),
            "note": (f"{len(wave) / rate:.2f} s is longer than the model's training length ({training / rate:g} s): "
                     f"scored as {len(starts)} windows of that length, probs are their mean (--window gives the "
                     "timeline)")}
    timeline = [
        {"start": round(s / rate, 3), "end": round(min(s + size, len(wave)) / rate, 3),
         "label": labels[int(np.argmax(row))], "probs": {label: float(p) for label, p in zip(labels, row)}}
        for s, row in zip(starts, rows)]
    return rows.mean(axis=0), {"timeline": timeline}


def predict_file(classifier, path: str | Path, window: float | None = None, hop: float | None = None,
                 min_seconds: float = 0.5, statistics: Statistics | None = None) -> dict:
    """``{"path", "label", "probs"}`` of one file, plus ``"timeline"`` with a window, ``"windows"`` and ``"note"``
    for a long file scored in windows of the training length, and ``"unreliable": true`` with its ``"reason"``
    for a clip shorter than ``min_seconds``. See :func:`predict`."""
    wave = load_audio(path, classifier.sample_rate)
    probs, extra = score_wave(classifier, wave, window, hop, statistics)
    labels = classifier.labels
    result = {"path": str(path), "label": labels[int(np.argmax(probs))],
              "probs": {label: float(p) for label, p in zip(labels, probs)}, **extra}
    seconds = len(wave) / classifier.sample_rate
    if seconds < min_seconds:
        result["unreliable"] = True
        result["reason"] = f"only {seconds:.2f} s of audio (less than {min_seconds:g} s)"
    return result


def speaker_statistics(classifier: OnnxClassifier, paths: Sequence[str | Path]
                       ) -> tuple[Statistics, float, list[BadInputError]]:
    """One speaker's feature statistics from its clips (each scored whole by the graph's moment outputs), the
    seconds of audio they came from, and the files that could not be read."""
    moments, seconds, problems = None, 0.0, []
    for path in paths:
        try:
            wave = load_audio(path, classifier.sample_rate)
        except BadInputError as problem:
            problems.append(problem)
            continue
        m = classifier.moments(wave)
        moments = m if moments is None else moments + m
        seconds += len(wave) / classifier.sample_rate
    if moments is None:
        raise SerkdError("speaker statistics: no readable audio (" + (", ".join(str(p.path) for p in problems)
                                                                    or "no files") + ")")
    return moments.statistics(), seconds, problems


def predict(classifier: OnnxClassifier, paths: Sequence[str | Path], window: float | None = None,
            hop: float | None = None, min_seconds: float = 0.5, speaker: Sequence[str | Path] | None = None
            ) -> tuple[list[dict], list[BadInputError]]:
    """Predictions for every readable file and the problems of the others (bad files do not stop the rest).

    Each result is ``{"path", "label", "probs": {label: p}}``, plus (see the module docstring) ``"timeline":
    [{"start", "end", "label", "probs"}]`` with ``window`` (seconds; windows every ``hop`` seconds, default
    back to back, the last aligned to the file's end, each scored whole), ``"windows"`` and ``"note"`` for a file
    longer than the training length scored without one, ``"unreliable": true`` and ``"reason"`` for a clip
    shorter than ``min_seconds``, and ``"speaker_statistics"`` for a speaker-normalised graph (statistics from
    the clips in ``speaker``, else from the files of this call taken as one speaker).
    """
    check_window(window, hop, min_seconds)
    files, problems = expand(paths)
    statistics, source = None, None
    if speaker is not None and not getattr(classifier, "takes_statistics", False):
        raise SerkdError(f"speaker: {getattr(classifier, 'path', 'the graph')} is not speaker-normalised (normalize: "
                         f"{getattr(classifier, 'normalization', {}).get('normalize', 'utterance')}); it takes no "
                         "speaker statistics")
    if getattr(classifier, "takes_statistics", False):
        clips, clip_problems = expand(speaker) if speaker is not None else (files, [])
        statistics, seconds, unread = speaker_statistics(classifier, clips)
        if speaker is not None:
            problems += clip_problems + unread  # the call's own bad files are reported once, below
            source = f"from {len(clips) - len(unread)} clip(s) of the speaker, {seconds:.1f} s"
        else:
            source = (f"from the {len(clips) - len(unread)} file(s) of this call taken as one speaker, {seconds:.1f} "
                      "s (give the speaker's clips to use others)")
    results = []
    for path in files:
        try:
            result = predict_file(classifier, path, window, hop, min_seconds, statistics)
        except BadInputError as problem:
            problems.append(problem)
            continue
        if source:
            result["speaker_statistics"] = source
        results.append(result)
    return results, problems


def evaluate(model: OnnxClassifier, items: Iterable[tuple]) -> dict:
    """WA / UA of the graph on (audio path, label id[, speaker]) items (label ids in the model's label order),
    each file scored as :func:`predict` scores it; a speaker-normalised graph gets each speaker's statistics from
    all of that speaker's items (as the fold's test speakers were normalised in training)."""
    from serkd.train.metrics import wa_ua

    items = list(items)
    if not items:
        raise SerkdError(f"{model.path}: no utterances to evaluate")
    statistics: dict = {}
    if model.takes_statistics:
        by_speaker: dict = {}
        for item in items:
            by_speaker.setdefault(item[2] if len(item) > 2 else None, []).append(item[0])
        statistics = {s: speaker_statistics(model, paths)[0] for s, paths in by_speaker.items()}
    targets, predictions = [], []
    for item in items:
        probs, _ = score_wave(model, load_audio(item[0], model.sample_rate),
                              statistics=statistics.get(item[2] if len(item) > 2 else None))
        targets.append(item[1])
        predictions.append(int(np.argmax(probs)))
    wa, ua = wa_ua(np.array(targets), np.array(predictions))
    return {"wa": float(wa), "ua": float(ua), "n": len(targets), "predictions": predictions}


def fold_test_items(kind: str, root: str | Path, speakers: Sequence[str], labels: Sequence[str],
                    skip_bad: bool = False, **options) -> list[tuple[Path, int, str]]:
    """(path, label id, speaker) of a corpus' utterances by ``speakers``, refusing a corpus with other labels."""
    from serkd.data.corpora import load_corpus

    manifest = load_corpus(kind, root, **options).raise_problems(skip_bad)
    if list(manifest.labels) != list(labels):
        raise SerkdError(f"{root}: corpus labels {manifest.labels} differ from the model's {list(labels)}")
    ids = manifest.label_ids()
    wanted = set(speakers)
    items = [(u.path, int(ids[i]), u.speaker) for i, u in enumerate(manifest.utterances) if u.speaker in wanted]
    if not items:
        raise SerkdError(f"{root}: no utterances by the fold's test speaker(s) {', '.join(speakers) or '(none)'}")
    return items
