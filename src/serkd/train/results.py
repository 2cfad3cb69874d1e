"""One result schema for every fold of every run: students, CNN and WavLM teachers, teacher evaluation.

A :class:`FoldResult` is what ``RUN_DIR/<fold>/results.json`` holds (``to_json``), what ``serkd report``
reads (``from_json``) and what the grid's results store will keep. Fractions, not percentages.

Marks say how a number was obtained when that is not the honest default:
``test-selected`` (best epoch picked on the test fold, as the seed did), ``leaky-teacher`` (distilled
from a teacher that saw the fold's test speakers), ``stale-teacher`` (teacher outputs computed on
other audio than the corpus now holds), ``search-selected`` (parameters chosen by ``serkd search``
on validation UA, then tested once), ``speaker-normalised`` (features standardised with each speaker's own
statistics, the test speaker's from its own unlabelled audio: transductive, see ``serkd.data.normalize``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

MARK_TEST_SELECTED = "test-selected"
MARK_LEAKY_TEACHER = "leaky-teacher"
MARK_STALE_TEACHER = "stale-teacher"
MARK_SEARCH_SELECTED = "search-selected"  # parameters chosen by serkd search on validation UA
MARK_SPEAKER_NORMALISED = "speaker-normalised"  # normalize: speaker (serkd.data.normalize)


@dataclass
class FoldResult:
    fold: str
    test: list[str]
    valid: list[str]
    wa: float
    ua: float
    labels: list[str]
    confusion: list[list[int]]
    corpus: str
    student: str | None  # the model that was scored (a teacher's display name for teacher rows)
    method: str  # a KD method, or "teacher"
    features: str | None
    role: str = "student"  # student | teacher
    valid_wa: float | None = None
    valid_ua: float | None = None
    best_epoch: int | None = None
    epochs: int | None = None
    selection: str | None = "valid"
    marks: list[str] = field(default_factory=list)
    n_train: int | None = None
    n_valid: int | None = None
    n_test: int = 0
    absent_test_classes: list[str] = field(default_factory=list)
    method_params: dict = field(default_factory=dict)
    teacher: str | None = None
    seed: int | None = None
    data_hash: str | None = None
    config_hash: str | None = None
    git_commit: str | None = None
    train_seconds: float | None = None
    history: list[dict] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # kind-specific: model_id, revision, provenance...

    def to_json(self) -> dict[str, Any]:
        """Flat JSON: the fields, then ``extra``'s keys beside them (the shape results.json always had)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**data, **self.extra}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FoldResult:
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        for f in fields(cls):  # results written before a field existed read as its default
            if f.name not in known and f.name != "extra":
                if f.default is not dataclasses.MISSING:
                    known[f.name] = f.default
                elif f.default_factory is not dataclasses.MISSING:
                    known[f.name] = f.default_factory()
                else:
                    known[f.name] = None
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})


def write_curves(folder: str | Path, row: dict[str, Any], step: int | None = None) -> None:
    """TensorBoard curves of one fold result (``FoldResult.to_json()``): its per-epoch train loss, validation
    WA/UA and learning rate, and the test WA/UA at the chosen epoch (at ``step``, default the best epoch).
    Written once a fold is done, so TensorBoard costs the training loop nothing."""
    from torch.utils.tensorboard import SummaryWriter

    at = (row.get("best_epoch") or 0) if step is None else step
    with SummaryWriter(str(folder)) as writer:
        for record in row.get("history") or []:
            for key in ("train_loss", "valid_ua", "valid_wa", "lr"):
                if record.get(key) is not None:
                    writer.add_scalar(key, record[key], record["epoch"])
        writer.add_scalar("test_wa_at_best", row["wa"], at)
        writer.add_scalar("test_ua_at_best", row["ua"], at)
