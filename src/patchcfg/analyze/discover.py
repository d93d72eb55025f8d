"""Phase 1 of :mod:`patchcfg.analyze`: the experiment folders under the given roots, and which
result folders (:func:`patchcfg.stages.result_folders`) each one has."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from patchcfg.errors import UserError
from patchcfg.stages import result_folders

#: A stage whose per-epoch table has another name: the labelling app's learning curve (one row per
#: refit, ``epoch`` = the refit's number, ``labels`` = labelled training rows).
METRICS_FILES = {"label": "learning_curve.csv"}
_STATUS_FILES = ("status.json", "metrics.csv", "summary.json")


def find_experiments(root: Path) -> list[tuple[Path, list[str]]]:
    """Experiment folders under ``root`` (sorted) with the stage folders each one has."""
    folders = result_folders()
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
        if "config.yaml" not in filenames:
            continue
        stages = [s for s in folders if s in dirnames and _is_stage_dir(os.path.join(dirpath, s))]
        if stages:
            found.append((Path(dirpath), stages))
            dirnames[:] = []  # an experiment's own folders hold no further experiments
    return found


def _is_stage_dir(path: str) -> bool:
    names = (*_STATUS_FILES, *METRICS_FILES.values())
    return any(os.path.isfile(os.path.join(path, name)) for name in names)


def check_roots(dirs: Sequence[str | os.PathLike]) -> list[Path]:
    """The folders to search (default ``experiments``); a missing one is a user error."""
    roots = [Path(d) for d in dirs] or [Path("experiments")]
    for root in roots:
        if not root.exists():
            raise UserError(f"{root}: no such directory (give the folder that holds your experiments)")
        if not root.is_dir():
            raise UserError(f"{root}: not a directory")
    return roots
