"""Speaker-independent folds: test speakers, a validation speaker set taken from the training speakers.

Every fold holds out its test group and, for model selection, a validation group chosen from the
*training* speakers by one documented rule: the speakers of the next test group in fold order
(cyclically), limited to ``valid_size`` speakers of it when given. The seed instead picks the best
epoch on the test fold; :func:`select_on_test` reproduces that and results are marked ``test-selected``.

Folds are named after their test speaker(s), joined by ``+`` (``spk03``, ``Ses01F+Ses01M``); a speaker
id made of digits only gets the prefix ``spk`` so a name never reads as a fold index. ``--folds``
(:func:`pick_folds`) takes a fold's index, its name, or its group's name (``Session1``, a CSV fold).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from serkd.errors import SerkdError

if TYPE_CHECKING:
    from serkd.data.manifest import Manifest


@dataclass(frozen=True)
class Fold:
    name: str
    test: tuple[str, ...]
    valid: tuple[str, ...]
    train: tuple[str, ...]
    selection: str = "valid"  # "valid": epoch chosen on validation speakers; "test": the seed's way
    group: str | None = None  # the corpus' name for the test group (IEMOCAP Session1, a CSV fold), if any

    def __post_init__(self) -> None:
        if self.selection == "valid":
            overlap = (set(self.test) & set(self.valid)) | (set(self.test) | set(self.valid)) & set(self.train)
            if overlap:
                raise SerkdError(f"fold {self.name}: speaker(s) {sorted(overlap)} in two of train/valid/test")
        elif set(self.test) & set(self.train):
            raise SerkdError(f"fold {self.name}: test speaker(s) in training")
        if not self.train or not self.test:
            raise SerkdError(f"fold {self.name}: needs training and test speakers")

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "test": list(self.test),
            "valid": list(self.valid),
            "train": list(self.train),
            "selection": self.selection,
            **({"group": self.group} if self.group else {}),
        }

    @classmethod
    def from_json(cls, data: dict) -> Fold:
        return cls(
            name=data["name"],
            test=tuple(data["test"]),
            valid=tuple(data["valid"]),
            train=tuple(data["train"]),
            selection=data.get("selection", "valid"),
            group=data.get("group"),
        )


def fold_name(test_speakers: Sequence[str]) -> str:
    """A fold's name: its test speakers joined by '+', digit-only ids prefixed ``spk``."""
    return "+".join(f"spk{s}" if str(s).isdigit() else str(s) for s in test_speakers)


def leave_groups_out(
    groups: Sequence[Sequence[str]],
    group_names: Sequence[str] | None = None,
    valid_size: int | None = None,
) -> list[Fold]:
    """One fold per group of speakers: test = that group, valid = the next group (cyclic).

    Folds are named after their test speakers (:func:`fold_name`); ``group_names`` (IEMOCAP sessions,
    a CSV's fold column) stay on each fold as ``group``, which ``pick_folds`` also accepts.
    """
    if len(groups) < 3:
        raise SerkdError(f"need at least 3 speaker groups for train/valid/test folds, got {len(groups)}")
    names = [fold_name(g) for g in groups]
    if len(set(names)) != len(names):
        raise SerkdError("a speaker is in two test groups: speaker-independent folds need disjoint groups")
    everyone = [s for g in groups for s in g]
    folds = []
    for i, group in enumerate(groups):
        valid = list(groups[(i + 1) % len(groups)])[: valid_size or None]
        held = set(group) | set(valid)
        train = [s for s in everyone if s not in held]
        group_name = str(group_names[i]) if group_names is not None else None
        folds.append(Fold(names[i], tuple(group), tuple(valid), tuple(train), group=group_name))
    return folds


def select_on_test(folds: Sequence[Fold]) -> list[Fold]:
    """The seed's protocol: no validation speaker, the best epoch is picked on the test speakers."""
    return [
        replace(f, valid=f.test, train=tuple(sorted(set(f.train) | set(f.valid))), selection="test")
        for f in folds
    ]


def pick_folds(folds: Sequence[Fold], spec: str | None) -> list[Fold]:
    """``spec`` is a comma list of fold indices, names or group names (``0,3``, ``spk03``, ``Session1``);
    None keeps all."""
    if not spec:
        return list(folds)
    chosen = []
    by_name = {**{f.group: f for f in folds if f.group}, **{f.name: f for f in folds}}
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        if token in by_name:
            chosen.append(by_name[token])
        elif token.isdigit() and int(token) < len(folds):
            chosen.append(folds[int(token)])
        else:
            raise SerkdError(f"unknown fold {token!r} (this corpus has {len(folds)} folds: 0..{len(folds) - 1}, "
                             f"named {', '.join(f.name for f in folds)})")
    return list(dict.fromkeys(chosen))


def fold_indices(manifest: Manifest, fold: Fold) -> dict[str, np.ndarray]:
    """Row indices of the manifest's train / valid / test utterances for ``fold``."""
    speakers = np.array([u.speaker for u in manifest.utterances])
    return {part: np.flatnonzero(np.isin(speakers, getattr(fold, part))) for part in ("train", "valid", "test")}
