"""What the registries share. Augmentation ops and query strategies: a package whose modules register
themselves when imported, so adding an entry is adding a file (:func:`import_modules`). Pretraining
methods and losses: a :class:`Registry` by name whose built-in entries are imported on first use (no
TensorFlow until then)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

_IMPORTED: set[str] = set()


def import_modules(package: str) -> None:
    """Import, once, every module of ``package`` whose name does not start with ``_``."""
    if package in _IMPORTED:
        return
    _IMPORTED.add(package)  # first: a module that registers while being imported calls this again
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


class Registry:
    """Names -> objects. ``builtin`` maps a name to the module that registers it; ``on_register``
    may adjust an object as it is registered (e.g. give a class its name)."""

    def __init__(self, kind: str, builtin: dict[str, str],
                 on_register: Callable[[str, Any], Any] | None = None):
        self.kind = kind
        self.builtin = builtin
        self.on_register = on_register
        self._entries: dict[str, Any] = {}

    def register(self, name: str):
        """Decorator: make the decorated object available as ``name``."""

        def decorator(obj):
            if self.on_register is not None:
                self.on_register(name, obj)
            self._entries[name] = obj
            return obj

        return decorator

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        return sorted(set(self.builtin) | set(self._entries))

    def get(self, name: str) -> Any:
        """The object registered as ``name`` (importing its built-in module when needed)."""
        if name not in self._entries and name in self.builtin:
            importlib.import_module(self.builtin[name])
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._entries[name]
