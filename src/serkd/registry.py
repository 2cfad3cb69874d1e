"""One registry idiom for corpora, students and KD methods, like timm's ``@register_model``.

    CORPORA = Registry("corpus")

    @CORPORA.register("emodb")
    def load(root, **options): ...

A package that owns a registry imports every module in its folder once (:func:`import_submodules`),
so adding a corpus, a student or a KD method is one file with its decorator and nothing else: no
central list to edit. The CLI reads its choices from ``available()``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> objects (classes or functions); ``kind`` names the registry in messages."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator: add the decorated object under ``name`` (case-insensitive), plus ``aliases``."""

        def wrap(obj: T) -> T:
            key = name.lower()
            if key in self._entries and self._entries[key] is not obj:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._entries[key] = obj
            for alias in aliases:
                self._aliases[alias.lower()] = key
            return obj

        return wrap

    def unregister(self, name: str) -> None:
        """Remove ``name`` and its aliases (tests that register a throw-away entry)."""
        key = self.resolve(name)
        self._entries.pop(key, None)
        self._aliases = {a: k for a, k in self._aliases.items() if k != key}

    def available(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def resolve(self, name: str) -> str | None:
        """The registered name ``name`` stands for (case and aliases folded), or None."""
        key = str(name).lower()
        key = self._aliases.get(key, key)
        return key if key in self._entries else None

    def __contains__(self, name: str) -> bool:
        return self.resolve(name) is not None

    def get(self, name: str) -> T:
        """The object registered under ``name``; ValueError listing the choices otherwise."""
        key = self.resolve(name)
        if key is None:
            raise ValueError(f"unknown {self.kind} {name!r} (available: {', '.join(self.available())})")
        return self._entries[key]


def import_submodules(package_name: str, package_path) -> None:
    """Import every public module of a package, so their ``register`` decorators run."""
    for info in pkgutil.iter_modules(package_path):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package_name}.{info.name}")
