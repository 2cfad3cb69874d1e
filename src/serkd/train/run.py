"""Training students: the folds, then (``final``) the model to ship. The public face of the student driver.

    results = run(RunConfig(corpus="synth", root="data/synth", out="runs/ce"), on_event=print)
    result = train_fold(config, "spk00")            # one fold: the unit a grid schedules

:func:`run` is the workflow on top of two drivers that never import each other's caller: the folds
(``train/student.py``: :func:`plan`, :func:`prepare`, :func:`train_fold`, re-exported here) and, when
``config.final``, the model trained on every speaker (``train/final.py``, itself built on the student
driver). Teachers have their own entry point, :func:`serkd.train.teachers.train_teacher`.
"""

from __future__ import annotations

from serkd.config import RunConfig
from serkd.train.events import OnEvent
from serkd.train.final import train_final
from serkd.train.results import FoldResult
from serkd.train.student import (
    Plan,
    PreparedData,
    TeacherFold,
    check_input_size,
    check_teacher_fold,
    make_loss,
    plan,
    prepare,
    teacher_fold,
    train_fold,
    train_folds,
)

__all__ = ["Plan", "PreparedData", "TeacherFold", "check_input_size", "check_teacher_fold", "make_loss", "plan",
           "prepare", "run", "teacher_fold", "train_fold"]


def run(config: RunConfig, on_event: OnEvent | None = None, overwrite: bool = False) -> list[FoldResult]:
    """Train every chosen fold of ``config`` (resuming: finished folds are reused); return their results.

    ``config.final``: then train ``RUN_DIR/final`` on every speaker (:func:`serkd.train.final.train_final`)."""
    results, data = train_folds(config, on_event, overwrite)
    if config.final:
        train_final(config.resolved(), data, on_event, overwrite)
    return results
