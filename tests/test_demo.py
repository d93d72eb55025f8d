"""Demo data: deterministic, partially labelled, overlapping classes."""

import numpy as np
import pytest

from patchcfg.demo import CLASSES, build_demo_table, digit_labels, write_demo
from patchcfg.errors import UserError
from patchcfg.label_table import read_label_table


def test_overlapping_classes():
    assert digit_labels(8) == {**{c: 0.0 for c in CLASSES}, "eight": 1.0, "even": 1.0, "loop": 1.0}
    assert digit_labels(7)["loop"] == 0.0 and digit_labels(9)["loop"] == 1.0


def test_table_proportions_and_determinism():
    targets = np.arange(1000) % 10
    paths = [f"{i}.png" for i in range(1000)]
    a = build_demo_table(targets, paths)
    b = build_demo_table(targets, paths)
    assert a.equals(b)
    labelled = a[CLASSES].notna().any(axis=1)
    assert a["validation"].sum() == 100
    assert a.loc[a["validation"], CLASSES].notna().all().all()
    train_labelled = labelled & ~a["validation"]
    assert train_labelled.sum() == 90
    partial = train_labelled & a[CLASSES].isna().any(axis=1)
    assert 20 <= partial.sum() <= 40


def test_write_demo_round_trip_and_never_overwrites_user_labels(tmp_path):
    path = write_demo(tmp_path)
    table = read_label_table(path)
    assert len(table) == 1797 and table.classes == CLASSES
    assert (tmp_path / table.df["filepath"][0]).is_file()
    write_demo(tmp_path)  # identical: fine
    table.df.loc[0, "zero"] = 1.0
    table.write()
    with pytest.raises(UserError, match="differs from the demo table"):
        write_demo(tmp_path)
    assert read_label_table(path).df.loc[0, "zero"] == 1.0
