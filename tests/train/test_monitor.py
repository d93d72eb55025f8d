"""Linear probe, alignment and uniformity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from patchcfg.train.monitor import LinearProbe, alignment, alignment_uniformity, exclusive_classes, uniformity


def test_alignment_and_uniformity_by_hand():
    e1, e2 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert alignment(np.stack([e1, e2]), np.stack([e1, e2])) == pytest.approx(0.0)
    assert alignment(np.stack([e1, e2]), np.stack([e2, e1])) == pytest.approx(2.0)  # ||e1 - e2||^2
    assert alignment(np.stack([2 * e1]), np.stack([3 * e2])) == pytest.approx(2.0)  # rows are normalised
    points = np.stack([e1, e2, -e1])  # squared distances 2, 4, 2
    assert uniformity(points) == pytest.approx(math.log((2 * math.exp(-4) + math.exp(-8)) / 3))
    both = alignment_uniformity(points, points)
    assert both["align"] == pytest.approx(0.0) and both["uniform"] == pytest.approx(uniformity(points))


def test_exclusive_group_leaves_out_overlapping_classes():
    # columns: a, b, c (one-hot), even (overlaps a and c), never (no positive)
    labels = np.array([[1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [0, 0, 1, 1, -1], [-1, -1, -1, 0, -1]], float)
    assert exclusive_classes(labels) == [0, 1, 2]


def separable(n, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    centers = 5 * np.eye(classes, 6)
    x = centers[y] + 0.3 * rng.normal(size=(n, 6))
    onehot = np.eye(classes)[y]
    overlap = (y == 0) | (y == 2)  # a non-exclusive class
    labels = np.concatenate([onehot, overlap[:, None]], axis=1)
    return x, labels


def test_probe_scores_separable_features_perfectly_and_ignores_unknowns():
    x, labels = separable(120)
    labels[:20, 1] = -1  # unknown entries: masked out of fitting and scoring
    labels[100:, 3] = -1
    validation = np.zeros(120, bool)
    validation[80:] = True
    probe = LinearProbe(labels, validation, ["a", "b", "c", "ac"], seed=0)
    assert probe.usable() and probe.accuracy_kind_ == "exclusive" and probe.exclusive_ == [0, 1, 2]
    assert probe.split_ == "validation column"
    scores = probe.score(x[probe.rows])
    assert scores["probe_accuracy"] == pytest.approx(1.0)
    assert scores["probe_macro_auc"] == pytest.approx(1.0)
    noise = np.random.default_rng(1).normal(size=x.shape)
    chance = probe.score(noise[probe.rows])
    assert chance["probe_macro_auc"] < 0.8 and chance["probe_accuracy"] < 0.7


def test_probe_without_validation_rows_uses_a_seeded_split_and_per_class_accuracy():
    x, labels = separable(50)
    labels = labels[:, 3:]  # only the overlapping class: no exclusive group
    labels[::5] = -1  # unlabelled rows are not used at all
    probe = LinearProbe(labels, np.zeros(50, bool), ["ac"], seed=3, validation_fraction=0.25)
    again = LinearProbe(labels, np.zeros(50, bool), ["ac"], seed=3, validation_fraction=0.25)
    np.testing.assert_array_equal(probe.val_rows_, again.val_rows_)
    assert len(probe.val_rows_) == 10 and len(probe.train_rows_) == 30
    assert not set(probe.rows) & set(range(0, 50, 5))
    assert probe.accuracy_kind_ == "per_class"
    assert probe.score(x[probe.rows])["probe_accuracy"] == pytest.approx(1.0)


def test_probe_needs_both_values_somewhere():
    labels = np.ones((10, 1))
    assert not LinearProbe(labels, np.arange(10) >= 7, ["x"]).usable()
