"""Cross-validation folds of a label table: multi-label aware, fixed by a seed, saved and reused.

Fold numbers: ``0 .. k-1`` for training rows, ``-1`` (:data:`HOLDOUT`) for validation rows and
``-2`` (:data:`EXCLUDED`) for excluded rows, which are in no fold. ``folds_count`` of 1 or None
puts every training row in fold 0: train on all of them, evaluate on the validation rows.

Rows are spread by iterative stratification (Sechidis, Tsoumakas & Vlahavas, "On the
stratification of multi-label data", ECML PKDD 2011): the rarest class is placed first, each of
its rows going to the fold that still wants most of that class, so every class is split as evenly
as the data allow. Only known positives count; unknown and absent labels do not.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from patchcfg.atomic import atomic_write_text
from patchcfg.errors import ConfigError, DataError

HOLDOUT = -1
EXCLUDED = -2
FOLDS_FILE = "folds.csv"


def _k(folds_count) -> int:
    if folds_count is None:
        return 1
    if isinstance(folds_count, bool) or not isinstance(folds_count, (int, np.integer)) or folds_count < 1:
        raise ConfigError(f"folds_count: expected a whole number >= 1 (or null), got {folds_count!r}")
    return int(folds_count)


def iterative_stratification(positives: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold (0..k-1) of each row of a (rows, classes) bool matrix of known positives."""
    positives = np.asarray(positives, bool)
    n = len(positives)
    if positives.ndim == 1:
        positives = positives[:, None]
    folds = np.full(n, -1, np.int64)
    want_rows = np.full(k, n / k)
    want_class = np.outer(np.full(k, 1.0 / k), positives.sum(0)).astype(np.float64)
    order = rng.permutation(n)
    remaining = positives[order].copy()
    left = np.ones(n, bool)

    def place(row_pos, classes):
        if classes is None:
            score = want_rows
            best = np.flatnonzero(score == score.max())
        else:
            score = want_class[:, classes]
            best = np.flatnonzero(score == score.max())
            if len(best) > 1:
                sub = want_rows[best]
                best = best[sub == sub.max()]
        fold = best[rng.integers(len(best))] if len(best) > 1 else best[0]
        row = order[row_pos]
        folds[row] = fold
        want_rows[fold] -= 1
        want_class[fold, positives[row]] -= 1
        left[row_pos] = False
        remaining[row_pos] = False

    while True:
        counts = remaining.sum(0)
        present = np.flatnonzero(counts > 0)
        if len(present) == 0:
            break
        rarest = present[np.argmin(counts[present])]
        for row_pos in np.flatnonzero(remaining[:, rarest]):
            place(row_pos, rarest)
    for row_pos in np.flatnonzero(left):
        place(row_pos, None)
    return folds


def assign_folds(table, folds_count, seed: int) -> np.ndarray:
    """Fold of every row of a :class:`~patchcfg.label_table.LabelTable` (see the module docstring).

    Deterministic: the same table, ``folds_count`` and ``seed`` always give the same folds.
    """
    k = _k(folds_count)
    exclude = np.asarray(table.exclude, bool)
    validation = np.asarray(table.validation, bool)
    folds = np.full(len(exclude), HOLDOUT, np.int64)
    folds[exclude] = EXCLUDED
    train = ~exclude & ~validation
    if k == 1:
        folds[train] = 0
        return folds
    if train.sum() < k:
        raise DataError(f"folds_count is {k} but there are only {int(train.sum())} training rows "
                        "(rows neither excluded nor validation)")
    positives = table.label_matrix()[train] == 1 if table.classes else np.zeros((int(train.sum()), 0), bool)
    folds[train] = iterative_stratification(positives, k, np.random.default_rng(int(seed)))
    return folds


def _status(folds: np.ndarray) -> np.ndarray:
    return np.where(folds >= 0, 0, folds)


def load_or_assign_folds(table, folds_count, seed: int, folder) -> np.ndarray:
    """Folds saved in ``folder/folds.csv`` (columns filepath, fold), made on first use.

    On a rerun the saved fold of every row is kept when the row is still there with the same
    status (training / validation / excluded) and the fold count is unchanged, so the same rows get
    the same folds. New rows, and rows whose status changed, are assigned by the same stratified
    procedure; a different ``folds_count`` reassigns everything. The file is rewritten atomically
    when anything changed.
    """
    k = _k(folds_count)
    path = Path(folder) / FOLDS_FILE
    fresh = assign_folds(table, k, seed)
    filepaths = table.df["filepath"].astype(str).to_numpy()
    if path.is_file():
        try:
            saved = pd.read_csv(path, dtype={"filepath": str, "fold": "Int64"}, keep_default_na=False)
        except (ValueError, pd.errors.ParserError) as error:
            raise DataError(f"{path}: not a folds file ({error}); delete it to reassign folds") from None
        if list(saved.columns) != ["filepath", "fold"]:
            raise DataError(f"{path}: expected the columns filepath, fold; delete it to reassign folds")
        saved_folds = dict(zip(saved["filepath"], saved["fold"].astype(int), strict=True))
        saved_k = max([f for f in saved_folds.values() if f >= 0], default=0) + 1
        if saved_k == k:
            folds = np.array([saved_folds.get(f, -99) for f in filepaths], np.int64)
            stale = (folds == -99) | (_status(folds) != _status(fresh))
            if stale.any():
                sub = fresh.copy()
                if k > 1 and (fresh[stale] >= 0).any():
                    stale_train = stale & (fresh >= 0)
                    rows = np.flatnonzero(stale_train)
                    positives = (table.label_matrix()[rows] == 1) if table.classes \
                        else np.zeros((len(rows), 0), bool)
                    rng = np.random.default_rng([int(seed), len(rows)])
                    sub[rows] = iterative_stratification(positives, k, rng)
                folds[stale] = sub[stale]
            else:
                return folds
            _write(path, filepaths, folds)
            return folds
    _write(path, filepaths, fresh)
    return fresh


def _write(path: Path, filepaths, folds) -> None:
    buffer = io.StringIO()
    pd.DataFrame({"filepath": filepaths, "fold": folds}).to_csv(buffer, index=False, lineterminator="\n")
    atomic_write_text(path, buffer.getvalue())
