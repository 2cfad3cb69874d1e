"""Training a teacher of any kind: the choice of driver lives here, not in the CLI.

- a registered student or timm name (``resnet18``): a CNN trained from scratch per fold on mel/MFCC
  features, exactly as a CE student (``train/run.py``), its logits and penultimate embeddings for every
  utterance written to the store;
- a WavLM checkpoint (hub id or folder): fine-tuned per fold on waveforms (``train/teacher_wavlm.py``);
- ``egemaps``: openSMILE eGeMAPSv02 functionals + logistic regression per fold (``train/teacher_egemaps.py``),
  the classical baseline, no GPU.

All write the same store layout (``OUT/<fold>/outputs.{safetensors,json}`` + ``results.json``).
"""

from __future__ import annotations

from serkd.config import TeacherConfig
from serkd.train.events import OnEvent
from serkd.train.results import FoldResult


def teacher_kind(config: TeacherConfig) -> str:
    return "egemaps" if config.is_egemaps else "wavlm" if config.is_wavlm else "cnn"


def train_teacher(config: TeacherConfig, on_event: OnEvent | None = None, overwrite: bool = False) -> list[FoldResult]:
    """Train (or reuse) the teacher of every chosen fold into the store ``config.out``."""
    config.validate()
    if config.is_egemaps:
        from serkd.train import teacher_egemaps

        return teacher_egemaps.train_teacher(config, on_event, overwrite)
    if config.is_wavlm:
        from serkd.train import teacher_wavlm

        return teacher_wavlm.train_teacher(config, on_event, overwrite)
    from serkd.train import run

    return run.run(config.student_config(), on_event, overwrite, store=config.out)
