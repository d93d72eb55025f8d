"""Uncertainty scores, one value per row, higher = more worth labelling.

Every function takes probabilities ``p`` of shape (rows, classes) and ``exclusive``:

- ``exclusive=False`` (default): independent sigmoid outputs, multi-hot labels (the label table's
  model). Each class is a yes/no question.
- ``exclusive=True``: softmax outputs over mutually exclusive classes (rows sum to 1).

===================  =================================  ==================================
score                sigmoid (multi-hot)                softmax (exclusive)
===================  =================================  ==================================
entropy              max_c H2(p_c)  (patchwork)         -sum_c p_c log p_c / log K
maxent:<c>           H2(p_c)                            H2(p_c)
margin               1 - min_c |2 p_c - 1|              1 - (p_top1 - p_top2)
least_confidence     1 - prod_c max(p_c, 1 - p_c)       1 - p_top1
===================  =================================  ==================================

H2 is the binary entropy in bits, so every score lies in [0, 1]. The margin is the gap between
the two most likely answers (the smallest gap is the most uncertain, so it is ranked first;
Scheffer et al. 2001): for a sigmoid class the answers are "yes" and "no", p and 1 - p, whose gap
is |2p - 1|; for softmax it is top-1 minus top-2, |p0 - p1| for two classes. Picsellia's two-class
margin sorts the other way round (most confident first); ours does not. Least confidence is
1 - the probability of the most likely labelling (Lewis & Gale 1994): for softmax the top class,
for independent sigmoids the most likely multi-hot vector, whose probability is the product of
max(p_c, 1 - p_c). For sigmoid outputs ``margin`` and ``entropy`` rank rows identically (both are
monotone in the distance of the most uncertain class from 0.5); they differ in scale only.

``exclusive`` may also be the model's output groups (:mod:`patchcfg.models.outputs`: each with
``columns`` and ``softmax``), say a softmax group of digits beside sigmoid attributes.
Each group is then scored on its own columns by the rule of its type, and a row's score is that
of its most uncertain group (the maximum over groups).
"""

from __future__ import annotations

import functools

import numpy as np

_EPS = 1e-12


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """H2(p) = -p log2 p - (1 - p) log2 (1 - p), elementwise, in [0, 1]."""
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def per_group(score):
    """``score(p, exclusive: bool)`` extended to output groups: with groups, the maximum over the
    groups of ``score`` on each group's columns (the row's most uncertain group)."""

    @functools.wraps(score)
    def scored(p: np.ndarray, exclusive=False) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        if exclusive is None or isinstance(exclusive, bool | np.bool_):
            return score(p, bool(exclusive))
        return np.max([score(p[:, list(g.columns)], g.softmax) for g in exclusive], axis=0)

    return scored


def predicted_labels(p: np.ndarray, exclusive=False) -> np.ndarray:
    """The most likely labelling: the argmax one-hot of a softmax group, p > 0.5 of a sigmoid one."""
    p = np.asarray(p, dtype=np.float64)
    groups = [(list(range(p.shape[1])), bool(exclusive))] if exclusive is None or isinstance(
        exclusive, bool | np.bool_) else [(list(g.columns), g.softmax) for g in exclusive]
    out = np.zeros_like(p)
    for columns, softmax in groups:
        part = p[:, columns]
        out[:, columns] = np.eye(len(columns))[part.argmax(axis=1)] if softmax else part > 0.5
    return out


@per_group
def entropy(p: np.ndarray, exclusive: bool) -> np.ndarray:
    if not exclusive:
        return binary_entropy(p).max(axis=1)
    q = np.clip(p, _EPS, 1.0)
    return -(p * np.log(q)).sum(axis=1) / np.log(max(p.shape[1], 2))


@per_group
def margin(p: np.ndarray, exclusive: bool) -> np.ndarray:
    if not exclusive:
        return 1.0 - np.abs(2 * p - 1).min(axis=1)
    top2 = -np.sort(-p, axis=1)[:, :2]
    return 1.0 - (top2[:, 0] - top2[:, 1])


@per_group
def least_confidence(p: np.ndarray, exclusive: bool) -> np.ndarray:
    if not exclusive:
        return 1.0 - np.maximum(p, 1 - p).prod(axis=1)
    return 1.0 - p.max(axis=1)

