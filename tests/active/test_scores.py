"""Uncertainty scores per output group: each group by its own rule, a row by its most uncertain group."""

import numpy as np
import pytest

from patchcfg.active import rank
from patchcfg.active.scores import entropy, least_confidence, margin, predicted_labels
from patchcfg.models.outputs import ColumnGroup

# columns: digit a, digit b, digit c (softmax) | even, loop (sigmoid); the groups need not be contiguous
GROUPS = [ColumnGroup("digit", "softmax", (0, 2, 4)), ColumnGroup("attributes", "sigmoid", (1, 3))]
P = np.array([
    # a,   even, b,    loop, c
    [0.90, 0.99, 0.05, 0.02, 0.05],   # sure digit, sure attributes
    [0.48, 0.99, 0.46, 0.02, 0.06],   # digit torn between a and b (margin 0.02)
    [0.90, 0.55, 0.05, 0.02, 0.05],   # sure digit, "even" near 0.5 (yes/no gap 0.10)
    [0.40, 0.99, 0.30, 0.02, 0.30],   # digit: top two 0.40 / 0.30 (margin 0.10)
])


def test_margin_per_group_is_the_most_uncertain_group():
    np.testing.assert_allclose(margin(P, GROUPS), [1 - 0.85, 1 - 0.02, 1 - 0.10, 1 - 0.10])
    # all-sigmoid reading of the same numbers: the digit columns as independent yes/no questions
    np.testing.assert_allclose(margin(P, False), [1 - 0.80, 1 - 0.04, 1 - 0.10, 1 - 0.20])


def test_ranking_by_group_margin_puts_the_torn_digit_first():
    ranking = rank("margin", probabilities=P, features=None, classes=["a", "even", "b", "loop", "c"],
                   candidates=np.ones(4, bool), n=4, exclusive=GROUPS)
    assert list(ranking["row"])[:1] == [1] and list(ranking["row"])[-1] == 0
    np.testing.assert_allclose(ranking["score"], [0.98, 0.90, 0.90, 0.15])


def test_entropy_and_least_confidence_per_group():
    digit, attributes = P[:, [0, 2, 4]], P[:, [1, 3]]
    np.testing.assert_allclose(entropy(P, GROUPS), np.maximum(entropy(digit, True), entropy(attributes, False)))
    np.testing.assert_allclose(least_confidence(P, GROUPS),
                               np.maximum(least_confidence(digit, True), least_confidence(attributes, False)))
    assert least_confidence(P, GROUPS)[3] == pytest.approx(0.60)


def test_predicted_labels_per_group():
    np.testing.assert_array_equal(predicted_labels(P[:2], GROUPS), [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(predicted_labels(P[3:, [0, 2, 4]], True), [[1, 0, 0]])
    np.testing.assert_array_equal(predicted_labels(P[3:], False), [[0, 1, 0, 0, 0]])
