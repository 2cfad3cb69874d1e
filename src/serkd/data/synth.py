"""A synthetic emotional-speech corpus, so that everything runs offline and in tests.

Each utterance is a harmonic "voice" with syllable-like amplitude bursts in noise:
- speakers differ in base pitch, timbre (formant-like resonances, harmonic roll-off) and speaking rate;
- emotions differ in F0 level and contour, energy, tempo and spectral tilt (anger: high, falling,
  loud, fast, flat tilt; sadness: low, flat, quiet, slow, steep tilt; ...);
- every cue is jittered per utterance and speakers overlap in pitch, with noise at a random SNR and
  random durations, so a model must separate emotion from speaker: learnable, not trivial.
The same ``seed`` gives byte-identical files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from serkd.data.audio import SAMPLE_RATE
from serkd.data.manifest import Utterance, write_manifest_csv
from serkd.io import atomic_path, atomic_write_json

# Relative effects per emotion: F0 ratio, F0 slope over the utterance (fraction), gain (dB),
# syllables per second, spectral tilt (dB/octave, more negative = darker), F0 jitter.
EMOTIONS: dict[str, dict[str, float]] = {
    "anger": {"f0": 1.30, "slope": -0.25, "gain": 6.0, "rate": 5.5, "tilt": -3.0, "jitter": 0.05},
    "happiness": {"f0": 1.35, "slope": 0.25, "gain": 3.0, "rate": 5.0, "tilt": -6.0, "jitter": 0.08},
    "sadness": {"f0": 0.85, "slope": -0.05, "gain": -6.0, "rate": 2.5, "tilt": -12.0, "jitter": 0.02},
    "neutral": {"f0": 1.00, "slope": -0.05, "gain": 0.0, "rate": 4.0, "tilt": -8.0, "jitter": 0.02},
}


@dataclass(frozen=True)
class SynthConfig:
    speakers: int = 8
    per_class: int = 12
    seed: int = 0
    min_seconds: float = 1.0
    max_seconds: float = 2.5
    cue_noise: float = 0.6  # per-utterance jitter of every cue, in units of the gap between emotions


def generate(out: str | Path, config: SynthConfig = SynthConfig()) -> list[Utterance]:
    """Write ``out/wav/<speaker>/<utt>.wav``, ``out/manifest.csv`` and ``out/synth.json``."""
    out = Path(out)
    rng = np.random.default_rng(config.seed)
    speakers = [_speaker(i, rng) for i in range(config.speakers)]
    utterances = []
    for speaker in speakers:
        for label, cues in EMOTIONS.items():
            for k in range(config.per_class):
                utt_id = f"{speaker['name']}_{label[:3]}_{k:03d}"
                wave = _utterance(speaker, cues, config, rng)
                path = out / "wav" / speaker["name"] / f"{utt_id}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(path, suffix=".wav") as tmp:
                    sf.write(str(tmp), wave, SAMPLE_RATE, subtype="PCM_16", format="WAV")
                utterances.append(Utterance(utt_id, path, label, speaker["name"], len(wave) / SAMPLE_RATE))
    write_manifest_csv(out / "manifest.csv", utterances, out)
    atomic_write_json(out / "synth.json", {"labels": list(EMOTIONS), "config": asdict(config)})
    return utterances


def _speaker(index: int, rng: np.random.Generator) -> dict:
    female = index % 2 == 1
    return {
        "name": f"spk{index:02d}",
        "f0": float(rng.uniform(170, 240) if female else rng.uniform(95, 150)),
        "formants": np.sort(rng.uniform([500, 1200, 2300], [900, 2000, 3200])) * (1.15 if female else 1.0),
        "rolloff": float(rng.uniform(-2.0, 2.0)),
        "rate": float(rng.uniform(0.85, 1.15)),
    }


def _utterance(speaker: dict, cues: dict, config: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    noise = config.cue_noise
    seconds = rng.uniform(config.min_seconds, config.max_seconds)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    phase01 = t / seconds

    f0_level = speaker["f0"] * cues["f0"] * np.exp(rng.normal(0, 0.12 * noise))
    slope = cues["slope"] + rng.normal(0, 0.15 * noise)
    wobble = cues["jitter"] * np.sin(2 * np.pi * rng.uniform(3, 7) * t + rng.uniform(0, 2 * np.pi))
    f0 = f0_level * (1 + slope * (phase01 - 0.5) + wobble)

    rate = cues["rate"] * speaker["rate"] * np.exp(rng.normal(0, 0.15 * noise))
    envelope = np.clip(np.sin(np.pi * rate * t + rng.uniform(0, np.pi)), 0, None) ** 1.5
    envelope *= np.clip(np.minimum(t, seconds - t) / 0.05, 0, 1)  # soft onset and offset

    n_harmonics = int(min(40, 7000 // f0.max()))
    k = np.arange(1, n_harmonics + 1)
    # the spectral envelope is set at the mean pitch: timbre per utterance, cheap to synthesise
    freqs = k * f0_level
    tilt = cues["tilt"] + speaker["rolloff"] + rng.normal(0, 2.5 * noise)
    amp = 10 ** (tilt * np.log2(k) / 20)
    amp *= (1 + 2.5 * np.exp(-(((freqs[:, None] - speaker["formants"][None, :]) / 180) ** 2))).prod(axis=1)
    phase = (2 * np.pi * np.cumsum(f0) / SAMPLE_RATE).astype(np.float32)
    offsets = rng.uniform(0, 2 * np.pi, n_harmonics).astype(np.float32)
    voiced = (amp.astype(np.float32) @ np.sin(k[:, None].astype(np.float32) * phase + offsets[:, None])) * envelope
    voiced /= np.abs(voiced).max() + 1e-9

    gain = 10 ** ((cues["gain"] + rng.normal(0, 2.0 * noise) - 12) / 20)
    snr_db = rng.uniform(8, 25)
    signal = gain * voiced
    noise_rms = np.sqrt(np.mean(signal**2)) / 10 ** (snr_db / 20)
    wave = signal + rng.normal(0, noise_rms, size=t.shape)
    return np.clip(wave, -0.99, 0.99).astype(np.float32)
