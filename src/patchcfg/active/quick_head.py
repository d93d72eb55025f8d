"""A quick head: probabilities from cached features, on a laptop without a GPU."""

from __future__ import annotations

import warnings

import numpy as np


def quick_head_probabilities(features: np.ndarray, labels: np.ndarray, train_mask: np.ndarray,
                             C: float = 1.0, seed: int = 0, exclusive: bool = False) -> np.ndarray:
    """(rows, classes) sigmoid-style probabilities for every row.

    One logistic regression per class (one-vs-rest, multi-hot), on standardised features, trained
    on the rows of ``train_mask`` where that class is known (``labels`` >= 0; -1 is unknown), then
    applied to every row. A class whose known training rows hold a single value (or none) gets
    its Laplace-smoothed prior, (positives + 1) / (known + 2), on every row: 0.5 when nothing is
    known, so such a class stays maximally uncertain. ``C`` is the inverse L2 strength.

    ``exclusive=True`` (mutually exclusive classes, a softmax model's setting): each row's
    one-vs-rest probabilities are divided by their sum, as scikit-learn's one-vs-rest classifier
    does, so that they sum to 1 as the exclusive uncertainty scores expect (the most likely class
    is unchanged).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    mask = np.asarray(train_mask, dtype=bool)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or mask.shape != (len(x),):
        raise ValueError(f"features {x.shape}, labels {y.shape} and train_mask {mask.shape} must share their rows")
    x = StandardScaler().fit_transform(x)
    out = np.empty(y.shape, dtype=np.float64)
    for c in range(y.shape[1]):
        known = mask & (y[:, c] >= 0)
        target = (y[known, c] > 0.5).astype(int)
        positives = int(target.sum())
        if positives in (0, len(target)):
            out[:, c] = (positives + 1) / (len(target) + 2)
            continue
        model = LogisticRegression(C=C, max_iter=2000, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x[known], target)
        out[:, c] = model.predict_proba(x)[:, 1]
    if exclusive and out.shape[1] > 1:
        out /= np.maximum(out.sum(axis=1, keepdims=True), 1e-12)
    return out
