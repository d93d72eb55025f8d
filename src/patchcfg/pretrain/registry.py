"""A registry by name whose built-in entries are imported on first use (no TensorFlow until then)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


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
