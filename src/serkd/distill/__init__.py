"""Knowledge-distillation losses for logit students, one file per method, and their registry.

    method = create("ckd", lambda_1=0.001)
    loss = method(student_logits, teacher_logits, targets)   # [B, C], [B, C] (None for ce), [B]

Adding a method: write ``<name>.py`` with an ``nn.Module`` (subclass ``LogitLoss``) and add one
line to ``_METHODS`` below.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from ._common import LogitLoss, standardize
from .ce import CE
from .ckd import CKD
from .dist import DIST
from .dkd import DKD
from .kd import KD
from .mlkd import MLKD
from .rkd import RKD

_METHODS: dict[str, type[LogitLoss]] = {
    "ce": CE,
    "kd": KD,
    "dkd": DKD,
    "rkd": RKD,
    "ckd": CKD,
    "mlkd": MLKD,
    "dist": DIST,
}

# The seed's command-line spellings.
_ALIASES = {"pure": "ce"}

__all__ = [
    "CE", "CKD", "DIST", "DKD", "KD", "MLKD", "RKD",
    "LogitLoss", "available", "create", "defaults", "get", "register", "standardize",
]


def register(name: str) -> Callable[[type[LogitLoss]], type[LogitLoss]]:
    """Class decorator adding a method under ``name`` (for methods defined outside this package)."""

    def wrap(cls: type[LogitLoss]) -> type[LogitLoss]:
        key = name.lower()
        if key in _METHODS and _METHODS[key] is not cls:
            raise ValueError(f"KD method {key!r} is already registered")
        _METHODS[key] = cls
        return cls

    return wrap


def available() -> list[str]:
    """Names accepted by ``create``, in registry order (the seed's five first)."""
    return list(_METHODS)


def get(name: str) -> type[LogitLoss]:
    """The class registered under ``name`` (case-insensitive; 'pure' means 'ce')."""
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key not in _METHODS:
        raise ValueError(f"unknown KD method {name!r}; available: {', '.join(available())}")
    return _METHODS[key]


def defaults(name: str) -> dict[str, Any]:
    """Constructor parameters of a method and their default values."""
    sig = inspect.signature(get(name).__init__)
    return {p.name: p.default for p in list(sig.parameters.values())[1:]}


def create(name: str, **params: Any) -> nn.Module:
    """Instantiate a KD method by name; unknown parameters raise TypeError naming the accepted ones."""
    cls = get(name)
    accepted = defaults(name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise TypeError(
            f"KD method {name!r} has no parameter(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted) or '(none)'}"
        )
    return cls(**params)
