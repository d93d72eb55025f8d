"""Old import paths that still work for one release: ``patchcfg.finetune`` and the others moved when
the tasks got their package (see the CHANGELOG). Importing one warns and gives the new module."""

from __future__ import annotations

import importlib
import sys
import warnings

#: old module -> new module (removed in 0.3)
MOVED = {
    "patchcfg.finetune": "patchcfg.tasks.finetune",
    "patchcfg.distill": "patchcfg.tasks.distill",
    "patchcfg.embed": "patchcfg.tasks.embed",
    "patchcfg.predict": "patchcfg.tasks.predict",
    "patchcfg.labels": "patchcfg.label_table",
}


def forward(old: str) -> None:
    """Warn that ``old`` moved, and make ``old`` the new module itself (the same objects)."""
    new = MOVED[old]
    warnings.warn(f"{old} moved to {new}; import {new} (the old name goes in patchcfg 0.3)",
                  DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
