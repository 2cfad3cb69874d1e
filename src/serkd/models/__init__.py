"""Student models by name: ``create("lightsernet", num_classes=7)`` or any timm model name.

Adding a student = one module with a constructor taking ``num_classes`` + one line in ``_REGISTRY``.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

import torch

from serkd.errors import SerkdError

# name -> "module:callable"; any other name is tried as a timm model
_REGISTRY: dict[str, str] = {
    "lightsernet": "serkd.models.lightsernet:LightSERNetPlus",
}
SEED_TIMM_STUDENTS = ("mobilenetv3_small_075", "efficientnet_b0", "resnet18")


def _constructor(name: str) -> Callable[..., torch.nn.Module]:
    module, attr = _REGISTRY[name].split(":")
    return getattr(import_module(module), attr)


def available() -> list[str]:
    return [*sorted(_REGISTRY), *SEED_TIMM_STUDENTS, "<any timm model>"]


def create(name: str, num_classes: int, **options) -> torch.nn.Module:
    """A student that maps (B, 1, F, T) features to (B, num_classes) logits."""
    if name in _REGISTRY:
        return _constructor(name)(num_classes=num_classes, **options)
    import timm

    if timm.is_model(name):
        from serkd.models.timm_student import TimmStudent

        return TimmStudent(name, num_classes=num_classes, **options)
    raise SerkdError(f"unknown model {name!r}: not registered ({', '.join(sorted(_REGISTRY))}) and not a timm model")


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
