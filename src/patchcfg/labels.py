"""The label table: a patchwork-compatible CSV of images and multi-hot, partially known labels.

Columns: ``filepath`` (relative paths resolve against the CSV's folder), ``exclude`` and
``validation`` (bools, default False), optional ``subset``, and one column per class whose cells
are blank (unknown), 0 (absent) or 1 (present). Blank stays blank through every read and write.
"""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from patchcfg.atomic import atomic_write_text
from patchcfg.errors import LabelTableError

RESERVED = ("filepath", "exclude", "validation", "subset")
BOOL_COLUMNS = ("exclude", "validation")
_TRUE = {"1", "true", "t", "yes", "y", "1.0"}
_FALSE = {"0", "false", "f", "no", "n", "", "0.0", "nan"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".npy")


@dataclass
class LabelTable:
    """A label table in memory.

    ``df`` keeps the columns as the user wrote them: ``filepath`` as written (str), ``exclude`` and
    ``validation`` as bool, ``subset`` as str (or absent), and each class as float with NaN for
    unknown. ``root`` is the folder relative file paths resolve against.
    """

    df: pd.DataFrame
    root: Path = field(default_factory=Path.cwd)
    path: Path | None = None

    @property
    def classes(self) -> list[str]:
        return [c for c in self.df.columns if c not in RESERVED]

    def __len__(self) -> int:
        return len(self.df)

    def resolved_paths(self) -> list[str]:
        """Absolute image paths, relative ones resolved against the table's folder."""
        return [p if os.path.isabs(p) else os.path.normpath(os.path.join(self.root, p))
                for p in self.df["filepath"]]

    def label_matrix(self, classes: list[str] | None = None) -> np.ndarray:
        """(rows, classes) float32: 1 present, 0 absent, -1 unknown."""
        values = self.df[classes or self.classes].to_numpy(dtype=np.float32)
        return np.where(np.isnan(values), -1.0, values).astype(np.float32)

    def known_mask(self) -> np.ndarray:
        """(rows, classes) bool: True where the label is known."""
        return self.label_matrix() >= 0

    def subsets(self) -> np.ndarray:
        if "subset" in self.df.columns:
            return self.df["subset"].fillna("").astype(str).to_numpy()
        return np.array([""] * len(self.df))

    @property
    def exclude(self) -> np.ndarray:
        return self.df["exclude"].to_numpy(dtype=bool)

    @property
    def validation(self) -> np.ndarray:
        return self.df["validation"].to_numpy(dtype=bool)

    def labelled(self) -> np.ndarray:
        """Rows with at least one known label."""
        return self.known_mask().any(axis=1)

    def train_rows(self) -> np.ndarray:
        """Rows that may be drawn for training: not excluded, not validation."""
        return ~self.exclude & ~self.validation

    def add_class(self, name: str) -> None:
        """Add a class column, all unknown. Existing labels are untouched."""
        _check_class_name(name, self.path)
        if name in self.df.columns:
            raise LabelTableError(f"{self.path or 'label table'}: class '{name}' already exists")
        self.df[name] = np.nan

    def to_csv_text(self) -> str:
        out = self.df.copy()
        for col in BOOL_COLUMNS:
            out[col] = out[col].map({True: "True", False: "False"})
        for col in self.classes:
            out[col] = out[col].map(lambda v: "" if pd.isna(v) else str(int(v)))
        buffer = io.StringIO()
        out.to_csv(buffer, index=False, lineterminator="\n")
        return buffer.getvalue()

    def write(self, path: str | os.PathLike | None = None) -> Path:
        """Write atomically; the previous version is kept as ``<path>.bak``."""
        target = Path(path or self.path)
        if target.exists():
            shutil.copy2(target, target.with_name(target.name + ".bak"))
        atomic_write_text(target, self.to_csv_text())
        self.path = target
        return target


def _check_class_name(name: str, where) -> None:
    if not name or name.strip() != name:
        raise LabelTableError(f"{where or 'label table'}: class name {name!r} is empty or has spaces around it")
    if name in RESERVED:
        raise LabelTableError(
            f"{where or 'label table'}: '{name}' is a reserved column name ({', '.join(RESERVED)}); "
            "rename the class")


def _parse_bool(series: pd.Series, column: str, path) -> pd.Series:
    lowered = series.fillna("").astype(str).str.strip().str.lower()
    bad = ~lowered.isin(_TRUE | _FALSE)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise LabelTableError(
            f"{path}: row {row + 2}, column '{column}': {series.iloc[row]!r} is not a bool "
            "(use True/False, 1/0 or leave blank for False)")
    return lowered.isin(_TRUE)


def _parse_class(series: pd.Series, column: str, path) -> pd.Series:
    text = series.fillna("").astype(str).str.strip()
    ok = text.isin(["", "0", "1", "0.0", "1.0"])
    if not ok.all():
        row = int(np.flatnonzero(~ok.to_numpy())[0])
        raise LabelTableError(
            f"{path}: row {row + 2}, column '{column}': {series.iloc[row]!r} is not a label "
            "(use 1 = present, 0 = absent, blank = unknown)")
    return text.replace("", np.nan).astype(float)


def from_dataframe(raw: pd.DataFrame, root: Path, path) -> LabelTable:
    """Validate a frame of strings as a label table (see module docstring)."""
    where = path or "label table"
    if "filepath" not in raw.columns:
        raise LabelTableError(
            f"{where}: no 'filepath' column (found: {', '.join(map(str, raw.columns)) or 'none'}); "
            "the first line must name the columns, one of them 'filepath'")
    unnamed = [c for c in raw.columns if str(c).startswith("Unnamed:") or str(c).strip() == ""]
    if unnamed:
        raise LabelTableError(f"{where}: a column has no name; every column needs a header")
    df = pd.DataFrame(index=raw.index)
    filepaths = raw["filepath"].fillna("").astype(str).str.strip()
    empty = filepaths == ""
    if empty.any():
        row = int(np.flatnonzero(empty.to_numpy())[0])
        raise LabelTableError(f"{where}: row {row + 2}: empty filepath")
    dup = filepaths.duplicated(keep="first")
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        first = int(np.flatnonzero((filepaths == filepaths.iloc[row]).to_numpy())[0])
        raise LabelTableError(
            f"{where}: row {row + 2}: filepath '{filepaths.iloc[row]}' already appears on row "
            f"{first + 2}; each image may appear once")
    df["filepath"] = filepaths
    for col in BOOL_COLUMNS:
        df[col] = _parse_bool(raw[col], col, where) if col in raw.columns else False
    if "subset" in raw.columns:
        df["subset"] = raw["subset"].fillna("").astype(str)
    for col in raw.columns:
        if col in RESERVED:
            continue
        _check_class_name(str(col), where)
        df[str(col)] = _parse_class(raw[col], str(col), where)
    return LabelTable(df=df.reset_index(drop=True), root=Path(root), path=Path(path) if path else None)


def read_label_table(path: str | os.PathLike) -> LabelTable:
    """Read and validate a label table; errors name the file, row and column."""
    path = Path(path)
    if not path.is_file():
        raise LabelTableError(f"{path}: label table not found (create one with `patchcfg init IMAGES --out {path}`)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise LabelTableError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    if not text.strip():
        raise LabelTableError(f"{path}: the file is empty; the first line must name the columns")
    try:
        raw = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[],
                          skipinitialspace=True)
    except pd.errors.ParserError as error:
        raise LabelTableError(f"{path}: not a valid CSV ({error})") from None
    dupcols = [c for c in raw.columns if "." in str(c) and str(c).rsplit(".", 1)[0] in raw.columns
               and str(c).rsplit(".", 1)[1].isdigit()]
    if dupcols:
        raise LabelTableError(f"{path}: column '{str(dupcols[0]).rsplit('.', 1)[0]}' appears more than once")
    return from_dataframe(raw, path.resolve().parent, path)


def list_images(spec: str | os.PathLike) -> list[str]:
    """Image paths from a folder (recursive), a glob, or a .txt list (one path per line)."""
    import glob

    spec = str(spec)
    p = Path(spec)
    if p.is_dir():
        found = sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
    elif p.suffix.lower() == ".txt" and p.is_file():
        lines = [line.strip() for line in p.read_text(encoding="utf-8").splitlines()]
        found = [line if os.path.isabs(line) else str(p.parent / line) for line in lines if line and not line.startswith("#")]
    elif any(ch in spec for ch in "*?["):
        found = sorted(f for f in glob.glob(spec, recursive=True) if Path(f).suffix.lower() in IMAGE_SUFFIXES)
    else:
        raise LabelTableError(f"{spec}: not a folder, a glob or a .txt list of images")
    if not found:
        raise LabelTableError(f"{spec}: no images found ({', '.join(IMAGE_SUFFIXES)})")
    return found


def init_table(images: list[str], classes: list[str], out: str | os.PathLike) -> LabelTable:
    """A new table of ``images`` with every class unknown; paths stored relative to ``out``'s folder."""
    out = Path(out)
    root = out.resolve().parent
    rel = [os.path.relpath(os.path.abspath(f), root) for f in images]
    df = pd.DataFrame({"filepath": rel, "exclude": False, "validation": False})
    table = LabelTable(df=df, root=root, path=out)
    for name in classes:
        table.add_class(name)
    return table


def stats(table: LabelTable) -> pd.DataFrame:
    """Per class: counts of present / absent / unknown, in training and validation rows."""
    rows = []
    active = ~table.exclude
    for cls in table.classes:
        col = table.df[cls]
        for part, mask in (("train", active & ~table.validation), ("validation", active & table.validation)):
            rows.append({"class": cls, "rows": part, "present": int((col[mask] == 1).sum()),
                         "absent": int((col[mask] == 0).sum()), "unknown": int(col[mask].isna().sum())})
    return pd.DataFrame(rows)
