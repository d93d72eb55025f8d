"""Multitask's pieces: merging label tables, drawing rows so every task is equally represented."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from patchcfg.label_table import read_label_table  # noqa: E402
from patchcfg.pretrain.multitask import balanced_probabilities, merge_tasks, task_name  # noqa: E402


def test_tables_merge_on_their_images_and_leave_validation_out(tmp_path):
    (tmp_path / "a.csv").write_text("filepath,validation,cat,dog\nx.png,false,1,0\ny.png,false,,1\n"
                                    "z.png,true,0,1\nw.png,false,,\n")
    (tmp_path / "b.csv").write_text("filepath,validation,night\ny.png,false,1\nv.png,false,0\n")
    paths, labels, columns = merge_tasks([read_label_table(tmp_path / "a.csv"), read_label_table(tmp_path / "b.csv")])
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["x.png", "y.png", "v.png"]  # z: validation; w: no label
    np.testing.assert_array_equal(labels, [[1, 0, -1], [-1, 1, 1], [-1, -1, 0]])
    assert columns == [slice(0, 2), slice(2, 3)]


def test_every_task_gets_an_equal_share_of_the_draws():
    labels = np.full((100, 2), -1.0, np.float32)
    labels[:90, 0] = 1.0   # task 0: 90 rows
    labels[90:, 1] = 0.0   # task 1: 10 rows
    labels[0, 1] = 1.0     # one row in both
    p = balanced_probabilities(labels, [slice(0, 1), slice(1, 2)])
    assert p.sum() == pytest.approx(1.0)
    task1 = (labels[:, 1] >= 0)
    assert p[task1].sum() == pytest.approx(0.5 + 0.5 / 90)
    assert p[90] == pytest.approx(0.5 / 11) and p[0] == pytest.approx(0.5 / 90 + 0.5 / 11)


def test_task_names_are_unique_and_metric_friendly():
    taken = set()
    first = task_name("data/land cover.csv", taken)
    taken.add(first)
    assert first == "land_cover" and task_name("other/land cover.csv", taken) == "land_cover_2"
