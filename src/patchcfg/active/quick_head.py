"""A quick head: probabilities from cached features, on a laptop without a GPU."""

from __future__ import annotations

import warnings

import numpy as np

from patchcfg.active.rows import as_row_features


def standard_scaling(selection) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) of the selected rows, as ``sklearn.preprocessing.StandardScaler`` computes
    them (population variance; scale 1 where the variance is 0), block by block in float64
    (Chan et al.'s pairwise update of the mean and the sum of squared deviations)."""
    count, mean, m2 = 0, None, None
    for _, block in selection.blocks():
        block = block.astype(np.float64)  # one copy of one block; the rest is in place
        n_b = len(block)
        mean_b = block.mean(axis=0)
        block -= mean_b
        m2_b = np.einsum("ij,ij->j", block, block)
        if mean is None:
            count, mean, m2 = n_b, mean_b, m2_b
            continue
        delta = mean_b - mean
        total = count + n_b
        mean = mean + delta * (n_b / total)
        m2 = m2 + m2_b + delta ** 2 * (count * n_b / total)
        count = total
    dims = selection.features.shape[1]
    if mean is None:
        return np.zeros(dims), np.ones(dims)
    scale = np.sqrt(m2 / count)
    scale[scale < 10 * np.finfo(np.float64).eps] = 1.0
    return mean, scale


def quick_head_probabilities(features, labels: np.ndarray, train_mask: np.ndarray,
                             C: float = 1.0, seed: int = 0, *, exclusive: bool = False, rows=None,
                             chunk_rows: int | None = None) -> np.ndarray:
    """(rows, classes) sigmoid-style probabilities for every row: :meth:`QuickHead.fit`, then
    :meth:`QuickHead.probabilities` of every row it scores (see there)."""
    return QuickHead.fit(features, labels, train_mask, C, seed, exclusive=exclusive, rows=rows,
                         chunk_rows=chunk_rows).probabilities()


class QuickHead:
    """One logistic regression per class (one-vs-rest, multi-hot), on standardised features, trained
    on the rows of ``train_mask`` where that class is known (``labels`` >= 0; -1 is unknown). A
    class whose known training rows hold a single value (or none) gets its Laplace-smoothed prior,
    (positives + 1) / (known + 2), on every row: 0.5 when nothing is known, so such a class stays
    maximally uncertain. ``C`` is the inverse L2 strength.

    ``exclusive=True`` (mutually exclusive classes, a softmax model's setting): each row's
    one-vs-rest probabilities are divided by their sum, as scikit-learn's one-vs-rest classifier
    does, so that they sum to 1 as the exclusive uncertainty scores expect (the most likely class
    is unchanged).

    ``features``: an array or a :class:`~patchcfg.active.rows.RowFeatures` (a memory map seen
    through an index), read ``chunk_rows`` rows at a time: the standardisation statistics are
    those of the scored rows, accumulated block by block; only the training rows are copied (in
    float64); rows are scored block by block in float32. ``rows``: the rows it scores (a mask or
    indices; default all); training rows must be among them.
    """

    def __init__(self, features, scored, mean, scale, weights, bias, prior, classes: int, exclusive: bool):
        self.features, self.scored, self.mean, self.scale = features, scored, mean, scale
        self.weights, self.bias, self.prior, self.classes, self.exclusive = weights, bias, prior, classes, exclusive

    @classmethod
    def fit(cls, features, labels: np.ndarray, train_mask: np.ndarray, C: float = 1.0, seed: int = 0, *,
            exclusive: bool = False, rows=None, chunk_rows: int | None = None) -> QuickHead:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        x = as_row_features(features if hasattr(features, "select") else np.asarray(features), chunk_rows)
        y = np.asarray(labels)
        mask = np.asarray(train_mask, dtype=bool)
        if y.ndim != 2 or len(x) != len(y) or mask.shape != (len(x),):
            raise ValueError(f"features {x.shape}, labels {y.shape} and train_mask {mask.shape} must share their rows")
        scored = x.select(rows)
        is_scored = np.zeros(len(x), bool)
        is_scored[scored.rows] = True
        mean, scale = standard_scaling(scored)
        train = mask & (y >= 0).any(axis=1)
        if (train & ~is_scored).any():
            raise ValueError(f"training row {int(np.flatnonzero(train & ~is_scored)[0])} is not among the scored rows")
        train_rows = np.flatnonzero(train)
        x_train = (x.take(train_rows).astype(np.float64) - mean) / scale
        classes = y.shape[1]
        weights = np.zeros((x.shape[1], classes))
        bias = np.zeros(classes)
        prior = np.full(classes, np.nan)
        for c in range(classes):
            known = y[train_rows, c] >= 0
            target = (y[train_rows[known], c] > 0.5).astype(int)
            positives = int(target.sum())
            if positives in (0, len(target)):
                prior[c] = (positives + 1) / (len(target) + 2)
                continue
            model = LogisticRegression(C=C, max_iter=2000, random_state=seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(x_train[known], target)
            weights[:, c], bias[c] = model.coef_[0], model.intercept_[0]
        return cls(x, is_scored, mean, scale, weights, bias, prior, classes, exclusive)

    def probabilities(self, rows=None) -> np.ndarray:
        """(rows of the features, classes): the probabilities of ``rows`` (indices, or None: every
        row it scores); the other rows are NaN. Scoring a few rows gives them the values scoring
        every row would (up to the float32 rounding of their products)."""
        x = self.features
        rows = np.flatnonzero(self.scored) if rows is None else np.asarray(rows, dtype=np.int64)
        if not self.scored[rows].all():
            raise ValueError(f"row {int(rows[~self.scored[rows]][0])} is not among the rows the quick head scores")
        scored = x.select(rows)
        out = np.full((len(x), self.classes), np.nan)
        fitted = np.isnan(self.prior)
        if fitted.any():
            dtype = x.dtype
            w = (self.weights[:, fitted] / self.scale[:, None]).astype(dtype)
            centre = self.mean.astype(dtype)
            logits = scored.rowwise(lambda block: (block - centre) @ w)
            out[np.ix_(scored.rows, np.flatnonzero(fitted))] = 1.0 / (1.0 + np.exp(-(logits + self.bias[fitted])))
        for c in np.flatnonzero(~fitted):
            out[scored.rows, c] = self.prior[c]
        if self.exclusive and out.shape[1] > 1:
            scored_rows = out[scored.rows]
            out[scored.rows] = scored_rows / np.maximum(scored_rows.sum(axis=1, keepdims=True), 1e-12)
        return out
