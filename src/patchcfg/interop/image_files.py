"""What the folder exports share: where each image goes, linking or copying it, what was left out.

An export folder is new: it is made empty, and nothing in it replaces a file the user wrote. Each
image keeps its path relative to the table's folder (``images/a.png`` stays ``images/a.png`` under
the class or ``data/`` folder), so two images never meet under one name; an image outside the
table's folder goes under ``_outside/`` with its absolute path. See docs/label-table.md,
"Exports and imports".
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from patchcfg.errors import UserError
from patchcfg.label_table import LabelTable

MODES = ("symlink", "copy")
OUTSIDE = "_outside"


@dataclass
class ExportReport:
    """What an export wrote (``unit`` per folder or kind), what it left out (rows per reason) and
    remarks on what it wrote (``notes``: a count per remark, the remark naming what it counts)."""

    out: Path
    unit: str = "images"
    written: Counter = field(default_factory=Counter)
    left_out: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)

    def lines(self) -> list[str]:
        kept = sum(self.written.values())
        lines = [f"wrote {self.out}: {kept} {self.unit}"
                 + "".join(f"\n  {name}: {count}" for name, count in sorted(self.written.items()))]
        if self.left_out:
            lines.append(f"left out {sum(self.left_out.values())} rows: "
                         + ", ".join(f"{count} {reason}" for reason, count in self.left_out.most_common()))
        lines += [f"note: {count} {remark}" for remark, count in self.notes.most_common()]
        return lines


def export_names(table: LabelTable) -> list[str]:
    """Per row, the image's path inside an export folder (``/``-separated, no ``..``)."""
    root = os.path.normpath(str(table.root))
    names = []
    for resolved in table.resolved_paths():
        relative = os.path.relpath(resolved, root)
        if relative == os.pardir or relative.startswith(os.pardir + os.sep):
            relative = os.path.join(OUTSIDE, resolved.lstrip(os.sep))
        names.append(Path(relative).as_posix())
    return names


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise UserError(f"mode {mode!r}: use one of {', '.join(MODES)}")


def check_folder_name(name: str, what: str) -> None:
    """A class name used as a folder name: one path component."""
    if name in (".", "..") or "/" in name or os.sep in name or "\0" in name or name.startswith("."):
        raise UserError(f"{what} '{name}' cannot be a folder name (a '/', or a leading '.'); "
                        "rename the class in the table's header to export it as folders")


def new_folder(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` made (or found empty); a folder that holds anything is refused, never emptied."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; give the path of a new folder to export into")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"{out} already holds files; they are kept as they are. Export into a new "
                        f"folder (or remove this one first)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def place_image(source: str, target: Path, mode: str) -> None:
    """``target`` as a symlink to ``source`` (its absolute path) or as a copy of it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode == "symlink":
        os.symlink(os.path.abspath(source), target)
    else:
        shutil.copy2(source, target)
