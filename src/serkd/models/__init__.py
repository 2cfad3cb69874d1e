"""Student models by name: ``create("lightsernet", num_classes=7)`` or any timm model name.

Adding a student = one module in this folder with a decorated class (or factory) taking
``num_classes`` and its own keyword options, nothing else::

    from serkd.models import register

    @register("mynet")
    class MyNet(nn.Module):
        def __init__(self, num_classes: int, width: int = 32): ...

Options reach the constructor from ``student_params`` (``--student-param width=64``). Any name that
is not registered is tried as a timm model (``TimmStudent``: in_chans=1, 128-d embedding, linear head).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from serkd.errors import SerkdError
from serkd.registry import Registry, import_submodules

STUDENTS: Registry[Callable[..., torch.nn.Module]] = Registry("student")
register = STUDENTS.register
SEED_TIMM_STUDENTS = ("mobilenetv3_small_075", "efficientnet_b0", "resnet18")


def available() -> list[str]:
    return [*STUDENTS.available(), *SEED_TIMM_STUDENTS, "<any timm model>"]


def _constructor(name: str) -> Callable[..., torch.nn.Module] | None:
    if name in STUDENTS:
        return STUDENTS.get(name)
    import timm

    if timm.is_model(name):
        from serkd.models.timm_student import TimmStudent

        return lambda **kw: TimmStudent(name, **kw)
    return None


def options(name: str) -> dict[str, Any]:
    """The student's own options (beyond ``num_classes``) and their defaults."""
    constructor = _constructor(name)
    if constructor is None:
        raise SerkdError(f"unknown model {name!r}: not registered ({', '.join(STUDENTS.available())}) and not a "
                         "timm model")
    if name not in STUDENTS:
        from serkd.models.timm_student import TimmStudent

        constructor = TimmStudent
    params = list(inspect.signature(constructor).parameters.values())
    return {p.name: p.default for p in params if p.name not in ("self", "name", "num_classes")
            and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def create(name: str, num_classes: int, **options_: Any) -> torch.nn.Module:
    """A student that maps (B, 1, F, T) features to (B, num_classes) logits."""
    constructor = _constructor(name)
    if constructor is None:
        raise SerkdError(f"unknown model {name!r}: not registered ({', '.join(STUDENTS.available())}) and not a "
                         "timm model")
    accepted = options(name)
    unknown = sorted(set(options_) - set(accepted))
    if unknown:
        raise SerkdError(f"student {name!r} has no option(s) {', '.join(unknown)} "
                         f"(its options: {', '.join(accepted) or 'none'})")
    return constructor(num_classes=num_classes, **options_)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


import_submodules(__name__, __path__)
