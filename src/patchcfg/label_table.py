"""The label table: a patchwork-compatible CSV of images and multi-hot, partially known labels.

Columns: ``filepath`` (relative paths resolve against the CSV's folder), ``exclude`` and
``validation`` (bools, default False), optional ``subset``, and one column per class whose cells
are blank (unknown), 0 (absent) or 1 (present). Blank stays blank through every read and write.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from patchcfg.atomic import atomic_write_text, backup, check_writable, file_lock
from patchcfg.errors import LabelTableError

RESERVED = ("filepath", "exclude", "validation", "subset")
BOOL_COLUMNS = ("exclude", "validation")
_TRUE = {"1", "true", "t", "yes", "y", "1.0"}
_FALSE = {"0", "false", "f", "no", "n", "", "0.0", "nan"}
_WRITE_CHUNK = 65536  # rows per csv.writer call: the GIL passes between calls (labels go on during a write)
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
        return resolve_paths(self.root, self.df["filepath"], absolute_as_written=True)

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
        """The table as CSV text: bools as True/False, labels as 1/0/blank (written row by row, so a
        table with tens of thousands of classes is as quick as a narrow one)."""
        import csv

        columns = list(self.df.columns)
        classes = self.classes
        labels = _label_texts(self.df[classes].to_numpy(dtype=float))
        where = {c: i for i, c in enumerate(classes)}
        parts = []
        for col in columns:
            if col in where:
                parts.append(labels[:, where[col]])
            elif col in BOOL_COLUMNS:
                parts.append(np.where(self.df[col].to_numpy(dtype=bool), "True", "False"))
            else:
                parts.append(np.array(["" if pd.isna(v) else str(v) for v in self.df[col]], dtype=object))
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for start in range(0, len(self.df), _WRITE_CHUNK):
            writer.writerows(zip(*(part[start:start + _WRITE_CHUNK] for part in parts), strict=True))
        return buffer.getvalue()

    def write(self, path: str | os.PathLike | None = None) -> Path:
        """Write atomically under the table's lock; the previous version is kept as ``<path>.bak``.

        A symlinked table is written through the link (its target is replaced), the file's mode
        is kept, and a read-only table is refused (:class:`patchcfg.atomic.ReadOnlyFileError`).
        Callers that read, change and write hold :func:`patchcfg.atomic.file_lock` around all three.
        """
        return self.write_text(self.to_csv_text(), path)

    def write_text(self, text: str, path: str | os.PathLike | None = None) -> Path:
        """:meth:`write` with the CSV text already made (by :meth:`to_csv_text`, perhaps of a copy)."""
        target = Path(path or self.path)
        with file_lock(target):
            check_writable(target)
            backup(target)
            atomic_write_text(target, text)
        self.path = target
        return target


def _label_texts(values: np.ndarray) -> np.ndarray:
    """Class cells as CSV text (object array): NaN blank, whole numbers as such; 0 and 1, the
    format's labels, through one lookup (formatting each cell took seconds at a million rows)."""
    unknown = np.isnan(values)
    if ((values == 0) | (values == 1) | unknown).all():
        return np.array(["0", "1", ""], dtype=object)[np.where(unknown, 2, values).astype(np.int8)]
    return np.where(unknown, "", np.nan_to_num(values).astype(int).astype(str)).astype(object)


def add_classes(path: str | os.PathLike, names: list[str]) -> list[str]:
    """Add class columns (all unknown) to the table at ``path``, under its lock, and write it."""
    if not names:
        raise LabelTableError(
            f"{path}: no class name given (e.g. `patchcfg labels add-class {path} cat,dog`)")
    if not Path(path).is_file():
        read_label_table(path)  # says what is wrong, before a lock file is made beside nothing
    with file_lock(path):
        table = read_label_table(path)
        for name in names:
            table.add_class(name)
        table.write()
    return list(names)


#: a relative path that ``os.path.normpath(os.path.join(root, path))`` would change beyond the join
_UNCLEAN = r"(?:^|/)\.\.?(?:/|$)|//|/$|^/"


def _matching_lines(pattern: str, lines: list[str]) -> np.ndarray:
    """A bool per line: does ``pattern`` (``^`` and ``$`` at the line's ends) match in it? One scan
    of the lines joined, not one search per line."""
    import re

    joined = "\n".join(lines)
    if joined.count("\n") != len(lines) - 1:  # a line holds a line break: one search per line
        return np.array([re.search(pattern, line) is not None for line in lines], dtype=bool)
    starts = np.zeros(len(lines), np.int64)
    np.cumsum(np.fromiter(map(len, lines), np.int64, len(lines))[:-1] + 1, out=starts[1:])
    found = np.fromiter((m.start() for m in re.finditer(pattern, joined, re.MULTILINE)), np.int64)
    hit = np.zeros(len(lines), bool)
    hit[np.searchsorted(starts, found, side="right") - 1] = True
    return hit


def resolve_paths(root, paths, absolute_as_written: bool = False) -> list[str]:
    """``os.path.normpath(os.path.join(root, p))`` for each path (absolute ones: normalised, or as
    written), fast for a million: a clean relative path is the normalised root, '/', the path."""
    paths = pd.Series(paths, dtype=object).astype(str)
    base = os.path.normpath(str(root))
    if os.sep != "/" or not len(paths):
        return [p if absolute_as_written and os.path.isabs(p) else os.path.normpath(os.path.join(base, p))
                for p in paths]
    out = (base.rstrip("/") + "/") + paths
    unclean = _matching_lines(_UNCLEAN, paths.tolist())
    if unclean.any():
        out[unclean] = [p if absolute_as_written and os.path.isabs(p) else os.path.normpath(os.path.join(base, p))
                        for p in paths[unclean]]
    return out.tolist()


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


def _parse_classes(frame: pd.DataFrame, classes: list[str], path) -> np.ndarray:
    """(rows, classes) float: 1, 0, NaN for blank; the first bad cell (by column, then row) is named.

    Each distinct cell text is judged once (a million rows hold a handful of distinct values)."""
    cells = frame.to_numpy(dtype=object)
    codes, uniques = pd.factorize(cells.ravel(), use_na_sentinel=True)
    meaning = np.empty(len(uniques) + 1)  # the last entry: missing cells (code -1)
    meaning[-1] = np.nan
    for i, value in enumerate(uniques):
        text = str(value).strip()
        meaning[i] = 1.0 if text in ("1", "1.0") else 0.0 if text in ("0", "0.0") else np.nan if not text else 2.0
    values = meaning[codes].reshape(cells.shape)
    bad = values == 2.0
    if bad.any():
        column, row = (int(i) for i in np.argwhere(bad.T)[0])
        raise LabelTableError(
            f"{path}: row {row + 2}, column '{classes[column]}': {frame.iloc[row, column]!r} is not a label "
            "(use 1 = present, 0 = absent, blank = unknown)")
    return values


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
    # One image may be spelled several ways (./a.png, a.png, sub/../a.png, /abs/a.png): compare
    # the paths they resolve to.
    resolved = pd.Series(resolve_paths(root, filepaths), index=filepaths.index)
    dup = resolved.duplicated(keep="first")
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        first = int(np.flatnonzero((resolved == resolved.iloc[row]).to_numpy())[0])
        same = "" if filepaths.iloc[first] == filepaths.iloc[row] else f" (as '{filepaths.iloc[first]}')"
        raise LabelTableError(
            f"{where}: row {row + 2}: filepath '{filepaths.iloc[row]}' already appears on row "
            f"{first + 2}{same}; each image may appear once: remove one of the two rows")
    df["filepath"] = filepaths
    for col in BOOL_COLUMNS:
        df[col] = _parse_bool(raw[col], col, where) if col in raw.columns else False
    if "subset" in raw.columns:
        df["subset"] = raw["subset"].fillna("").astype(str)
    classes = [str(col) for col in raw.columns if col not in RESERVED]
    for col in classes:
        _check_class_name(col, where)
    # Every class column at once: a table may have tens of thousands of them.
    values = _parse_classes(raw[[c for c in raw.columns if c not in RESERVED]], classes, where)
    df = pd.concat([df, pd.DataFrame(values, index=raw.index, columns=classes)], axis=1)
    return LabelTable(df=df.reset_index(drop=True), root=Path(root), path=Path(path) if path else None)


def _csv_frame(text: str, path) -> pd.DataFrame:
    """The CSV as a frame of strings, built in one piece (tables may have tens of thousands of columns)."""
    import csv

    try:
        rows = [row for row in csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""),
                                          skipinitialspace=True)
                if row and (row[0].strip() or any(cell.strip() for cell in row))]  # blank lines are skipped
    except csv.Error as error:
        raise LabelTableError(f"{path}: not a valid CSV ({error})") from None
    header = [name.lstrip() for name in rows[0]]  # as skipinitialspace: trailing spaces are refused later
    if any(not name for name in header):
        raise LabelTableError(f"{path}: a column has no name; every column needs a header")
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise LabelTableError(f"{path}: column '{name}' appears more than once")
        seen.add(name)
    width = len(header)
    for number, row in enumerate(rows[1:], start=2):
        if len(row) > width:
            raise LabelTableError(
                f"{path}: row {number} has {len(row)} fields but the header names {width} columns; "
                "quote values that hold commas, or add the missing column names")
        if len(row) < width:
            row.extend([""] * (width - len(row)))
    cells = np.empty((len(rows) - 1, width), dtype=object)
    if len(rows) > 1:
        cells[:] = rows[1:]
    return pd.DataFrame(cells, columns=header, dtype=object)


#: the last table read: ((resolved path, digest of its bytes), validated table); see :func:`read_label_table`
_LAST_READ: tuple[tuple[str, bytes], LabelTable] | None = None


def read_label_table(path: str | os.PathLike) -> LabelTable:
    """Read and validate a label table; errors name the file, row and column.

    A command reads its table more than once (the config check, the stage, its image list), and at
    a million rows parsing takes seconds. So the last table read is kept, and a later read of the
    same file with the same bytes (a BLAKE2 digest: tens of milliseconds) gets a copy of it.
    """
    import hashlib

    global _LAST_READ
    path = Path(path)
    if path.is_dir():
        raise LabelTableError(f"{path}: is a folder, not a label table; give the CSV file inside it "
                              f"(or build one with `patchcfg init {path} --out labels.csv`)")
    if not path.is_file():
        raise LabelTableError(f"{path}: label table not found (create one with `patchcfg init IMAGES --out {path}`)")
    data = path.read_bytes()
    identity = (str(path.resolve()), hashlib.blake2b(data, digest_size=32).digest())
    last = _LAST_READ
    if last is not None and last[0] == identity:
        return LabelTable(last[1].df.copy(), last[1].root, path)
    try:
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as text mode reads it
    except UnicodeDecodeError as error:
        raise LabelTableError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    if not text.strip():
        raise LabelTableError(f"{path}: the file is empty; the first line must name the columns")
    table = from_dataframe(_csv_frame(text, path), path.resolve().parent, path)
    _LAST_READ = (identity, LabelTable(table.df.copy(), table.root, path))
    return table


def forget_last_read() -> None:
    """Drop the copy :func:`read_label_table` keeps (a long-lived process that holds its own table:
    at a million rows the copy is about 0.1 GB)."""
    global _LAST_READ
    _LAST_READ = None


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
