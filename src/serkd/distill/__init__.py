"""Knowledge-distillation losses, one file per method, and their registry.

    method = create("ckd", lambda_1=0.001)
    loss = method(student_logits, teacher_logits, targets)   # [B, C], [B, C] (None for ce), [B]

Adding a method = one file in this folder with an ``nn.Module`` subclass of ``LogitLoss`` decorated
with ``@register("name")`` (from ``._common``), its formula in the module docstring; nothing else.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from torch import nn

from serkd.registry import import_submodules

from ._common import METHODS, LogitLoss, register, standardize
from .ce import CE
from .ckd import CKD
from .dist import DIST
from .dkd import DKD
from .kd import KD
from .mlkd import MLKD
from .rkd import RKD

# the seed's five lead every listing; the others follow in registration order
SEED_METHODS = ("ce", "kd", "dkd", "rkd", "ckd")

__all__ = [
    "CE", "CKD", "DIST", "DKD", "KD", "MLKD", "RKD",
    "LogitLoss", "available", "create", "defaults", "get", "register", "standardize",
]


def available() -> list[str]:
    """Names accepted by ``create``: the seed's five first, then the others."""
    return [*SEED_METHODS, *(m for m in METHODS.available() if m not in SEED_METHODS)]


def get(name: str) -> type[LogitLoss]:
    """The class registered under ``name`` (case-insensitive; 'pure' means 'ce')."""
    key = METHODS.resolve(name)
    if key is None:
        raise ValueError(f"unknown KD method {name!r}; available: {', '.join(available())}")
    return METHODS.get(key)


def canonical(name: str) -> str:
    """The registered name (``pure`` -> ``ce``); ValueError for an unknown method."""
    get(name)
    return METHODS.resolve(name)


def defaults(name: str) -> dict[str, Any]:
    """Constructor parameters of a method and their default values."""
    sig = inspect.signature(get(name).__init__)
    return {p.name: p.default for p in list(sig.parameters.values())[1:]}


def summary(name: str) -> str:
    """The first sentence of a method's docstring (its module's), on one line: what it is."""
    cls = get(name)
    doc = inspect.getmodule(cls).__doc__ or cls.__doc__ or ""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    return re.split(r"(?<=\.)\s+(?=[A-Z])", paragraph)[0]


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


import_submodules(__name__, __path__)
