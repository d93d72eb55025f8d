"""Folds: disjoint, covering every training row, stratified, saved and identical across reruns."""

import numpy as np
import pandas as pd
import pytest

from patchcfg.data.folds import (
    EXCLUDED,
    HOLDOUT,
    assign_folds,
    iterative_stratification,
    load_or_assign_folds,
)
from patchcfg.errors import ConfigError, DataError
from patchcfg.label_table import from_dataframe


def make_table(n=120, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"filepath": [f"img_{i:04d}.png" for i in range(n)]})
    frame["exclude"] = np.where(rng.random(n) < 0.05, "True", "False")
    frame["validation"] = np.where(rng.random(n) < 0.15, "True", "False")
    for name, rate in (("common", 0.5), ("rare", 0.08), ("partial", 0.3)):
        values = np.where(rng.random(n) < rate, "1", "0").astype(object)
        if name == "partial":
            values[rng.random(n) < 0.5] = ""
        frame[name] = values
    return from_dataframe(frame.astype(str), root=".", path=None)


def test_folds_disjoint_cover_training_rows_and_mark_holdout():
    table = make_table()
    folds = assign_folds(table, 5, seed=1)
    train = table.train_rows()
    assert set(folds[train]) == set(range(5))
    assert (folds[table.exclude] == EXCLUDED).all()
    assert (folds[table.validation & ~table.exclude] == HOLDOUT).all()
    assert (folds >= 0).sum() == train.sum()  # each training row in exactly one fold
    sizes = np.bincount(folds[train], minlength=5)
    assert sizes.max() - sizes.min() <= 1


def test_folds_are_stratified_per_class():
    table = make_table(400)
    folds = assign_folds(table, 4, seed=0)
    train = table.train_rows()
    positives = table.label_matrix()[train] == 1
    for c in range(positives.shape[1]):
        per_fold = np.bincount(folds[train][positives[:, c]], minlength=4)
        assert per_fold.max() - per_fold.min() <= 2, (table.classes[c], per_fold)


def test_single_label_exactly_balanced():
    y = np.zeros((50, 3), bool)
    y[np.arange(50), np.arange(50) % 3] = True
    folds = iterative_stratification(y, 5, np.random.default_rng(0))
    for c in range(3):
        counts = np.bincount(folds[y[:, c]], minlength=5)
        assert counts.max() - counts.min() <= 1


def test_deterministic_and_seed_dependent():
    table = make_table()
    np.testing.assert_array_equal(assign_folds(table, 5, 3), assign_folds(table, 5, 3))
    assert not np.array_equal(assign_folds(table, 5, 3), assign_folds(table, 5, 4))


def test_one_fold_or_none_trains_on_everything():
    table = make_table()
    for k in (1, None):
        folds = assign_folds(table, k, 0)
        assert (folds[table.train_rows()] == 0).all()
        assert (folds[~table.train_rows()] < 0).all()
    with pytest.raises(ConfigError):
        assign_folds(table, 0, 0)
    with pytest.raises(DataError, match="only"):
        assign_folds(make_table(6), 10, 0)


def test_saved_and_reused(tmp_path):
    table = make_table()
    first = load_or_assign_folds(table, 5, 7, tmp_path)
    saved = pd.read_csv(tmp_path / "folds.csv")
    assert list(saved.columns) == ["filepath", "fold"]
    np.testing.assert_array_equal(saved["fold"].to_numpy(), first)
    mtime = (tmp_path / "folds.csv").stat().st_mtime_ns
    again = load_or_assign_folds(table, 5, 7, tmp_path)
    np.testing.assert_array_equal(first, again)
    assert (tmp_path / "folds.csv").stat().st_mtime_ns == mtime  # untouched

    # the saved file wins over a new seed; rows keep their folds when rows are added
    bigger = make_table(130)
    bigger.df.loc[:119, :] = table.df.to_numpy()
    grown = load_or_assign_folds(bigger, 5, 99, tmp_path)
    np.testing.assert_array_equal(grown[:120], first)
    train_new = bigger.train_rows()[120:]
    assert (grown[120:][train_new] >= 0).all()

    # a different fold count reassigns
    three = load_or_assign_folds(bigger, 3, 7, tmp_path)
    assert set(three[bigger.train_rows()]) == {0, 1, 2}
