"""What the registries share (augmentation ops, query strategies): a package whose modules register
themselves when imported, so adding an entry is adding a file."""

from __future__ import annotations

import importlib
import pkgutil

_IMPORTED: set[str] = set()


def import_modules(package: str) -> None:
    """Import, once, every module of ``package`` whose name does not start with ``_``."""
    if package in _IMPORTED:
        return
    _IMPORTED.add(package)  # first: a module that registers while being imported calls this again
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
