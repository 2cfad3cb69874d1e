"""Reading audio: any format soundfile reads, any rate, any channel count -> 16 kHz mono float32.

Every problem with a file becomes a :class:`BadInputError` naming the file, so callers can list
all bad files of a corpus (or skip them) instead of dying on the first traceback.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from serkd.errors import BadInputError

SAMPLE_RATE = 16000
log = logging.getLogger(__name__)
_resample_noted: set[int] = set()


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Return the file's samples as 16 kHz mono float32; raise BadInputError for any bad file."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "audio file not found")
    if path.stat().st_size == 0:
        raise BadInputError(path, "empty file (0 bytes)")
    import soundfile as sf  # here, not at import: model code that imports SAMPLE_RATE runs without it (gpu_check)

    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for corrupt headers/data
        raise BadInputError(path, f"cannot decode audio ({_first_line(exc)})") from None
    return _validate(path, _to_mono_rate(samples, rate, sample_rate, path))


def decode_waveform(
    samples: np.ndarray, rate: int, sample_rate: int = SAMPLE_RATE, name: str = "<array>"
) -> np.ndarray:
    """Same checks and conversions as :func:`load_audio` for samples already in memory."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[:, None]
    return _validate(Path(name), _to_mono_rate(samples, rate, sample_rate, Path(name)))


def _to_mono_rate(samples: np.ndarray, rate: int, sample_rate: int, path: Path) -> np.ndarray:
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if rate != sample_rate and mono.size:
        # once per rate and process: a corpus at 44.1 kHz would otherwise print one line per file
        if rate not in _resample_noted:
            _resample_noted.add(rate)
            log.warning("resampling audio from %d Hz to %d Hz (first: %s; said once per rate)", rate, sample_rate,
                        path)
        import soxr

        mono = soxr.resample(mono, rate, sample_rate).astype(np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _validate(path: Path, mono: np.ndarray) -> np.ndarray:
    if mono.size == 0:
        raise BadInputError(path, "audio has no samples")
    if not np.all(np.isfinite(mono)):
        raise BadInputError(path, "audio contains NaN or infinite samples")
    if not np.any(mono):
        raise BadInputError(path, "audio is all zeros (silent)")
    return mono


def file_hash(path: str | Path) -> str:
    """SHA-1 of the file's bytes: the identity of its audio for caches and data hashes."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
