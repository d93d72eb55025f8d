"""Samplers that pick a batch as a whole or from neighbours: BADGE, k-center greedy, GUIDE search;
and the helpers that mix picks (explore, GUIDE's entropy share).

Small estimator-like objects: the constructor stores parameters, ``fit`` picks and leaves its
result in attributes ending with ``_`` (``picks_``: indices into the rows given, in pick order;
``scores_``: the score of each pick when it was picked).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata

from patchcfg.active.scores import predicted_labels

_CHUNK = 1 << 22  # elements per block of pairwise products


def _floats(a: np.ndarray) -> np.ndarray:
    """float32 stays float32 (half the memory of a copy for large feature matrices); else float64."""
    a = np.asarray(a)
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float64)


class BadgeSampler:
    """BADGE: k-means++ seeding on gradient embeddings (Ash et al., ICLR 2020, "Deep Batch Active
    Learning by Diverse, Uncertain Gradient Lower Bounds").

    The embedding of a row is the gradient of the loss with respect to the last layer's weights,
    if the model's own prediction were the label: g = (p - y_hat) ⊗ h, with h the penultimate
    features and y_hat = round(p) for sigmoid (multi-hot) outputs, the one-hot argmax for softmax
    (``exclusive=True``). Its norm is large where the model is unsure; k-means++ seeding (the first
    pick has the largest norm, each next one is drawn with probability ∝ its squared distance to
    the nearest pick, Arthur & Vassilvitskii 2007) then spreads the picks out. g is never built:
    <a_i ⊗ h_i, a_j ⊗ h_j> = (a_i · a_j)(h_i · h_j), so memory stays O(rows · (classes + features)).

    ``scores_``: the squared distance of each pick's embedding to the nearest earlier pick when it
    was drawn (for the first pick: its squared norm).
    """

    def __init__(self, n: int, exclusive: bool = False, seed: int = 0):
        self.n = n
        self.exclusive = exclusive
        self.seed = seed

    def fit(self, probabilities: np.ndarray, features: np.ndarray) -> BadgeSampler:
        p = np.asarray(probabilities, dtype=np.float64)
        h = _floats(features)
        a = p - predicted_labels(p, self.exclusive)  # per output group when given groups
        sq_norm = (a * a).sum(axis=1) * (h * h).sum(axis=1, dtype=np.float64)
        rows = len(p)
        n = min(self.n, rows)
        rng = np.random.default_rng(self.seed)
        picks: list[int] = []
        scores: list[float] = []
        if n == 0:
            self.picks_, self.scores_ = np.zeros(0, int), np.zeros(0)
            return self
        nearest = np.full(rows, np.inf)
        current, score = int(np.argmax(sq_norm)), float(sq_norm.max())
        for _ in range(n):
            picks.append(current)
            scores.append(score)
            if len(picks) == n:
                break
            dist = sq_norm + sq_norm[current] - 2.0 * (a @ a[current]) * (h @ h[current])
            nearest = np.minimum(nearest, np.maximum(dist, 0.0))
            nearest[picks] = 0.0
            total = nearest.sum()
            if total > 0 and np.isfinite(total):
                current = int(rng.choice(rows, p=nearest / total))
            else:  # every row coincides with a pick: any unpicked row will do
                current = int(rng.choice(np.setdiff1d(np.arange(rows), picks)))
            score = float(nearest[current])
        self.picks_ = np.asarray(picks, dtype=np.int64)
        self.scores_ = np.asarray(scores, dtype=np.float64)
        return self


def min_sq_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """For each row of x, the squared Euclidean distance to the nearest row of y (blockwise)."""
    x, y = _floats(x), _floats(y)
    xx = (x * x).sum(axis=1, dtype=np.float64)
    yy = (y * y).sum(axis=1, dtype=np.float64)
    out = np.full(len(x), np.inf)
    step = max(1, _CHUNK // max(len(x), 1))
    for start in range(0, len(y), step):
        block = xx[:, None] + yy[None, start:start + step] - 2.0 * x @ y[start:start + step].T
        out = np.minimum(out, block.min(axis=1))
    return np.maximum(out, 0.0)


class KCenterGreedy:
    """k-center greedy (Sener & Savarese, ICLR 2018, "Active Learning for Convolutional Neural
    Networks: A Core-Set Approach"): repeatedly pick the row farthest (Euclidean, in feature
    space) from every labelled row and every earlier pick. With no labelled rows the first pick is
    drawn at random (seeded).

    ``scores_``: the distance of each pick to its nearest labelled row or earlier pick when it was
    picked (NaN for a first pick made with nothing labelled).
    """

    def __init__(self, n: int, seed: int = 0):
        self.n = n
        self.seed = seed

    def fit(self, features: np.ndarray, labelled: np.ndarray | None = None) -> KCenterGreedy:
        x = _floats(features)
        rows = len(x)
        n = min(self.n, rows)
        xx = (x * x).sum(axis=1, dtype=np.float64)
        picks: list[int] = []
        scores: list[float] = []
        if labelled is not None and len(labelled):
            nearest = min_sq_distances(x, labelled)
        else:
            nearest = np.full(rows, np.inf)
            if n:
                first = int(np.random.default_rng(self.seed).integers(rows))
                picks.append(first)
                scores.append(np.nan)
                nearest = np.minimum(nearest, np.maximum(xx + xx[first] - 2.0 * x @ x[first], 0.0))
                nearest[first] = -1.0
        while len(picks) < n:
            current = int(np.argmax(nearest))
            picks.append(current)
            scores.append(float(np.sqrt(max(nearest[current], 0.0))))
            nearest = np.minimum(nearest, np.maximum(xx + xx[current] - 2.0 * x @ x[current], 0.0))
            nearest[picks] = -1.0
        self.picks_ = np.asarray(picks, dtype=np.int64)
        self.scores_ = np.asarray(scores, dtype=np.float64)
        return self


def nearest_positive_similarity(features: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """For each row, the cosine similarity to its nearest known positive (blockwise)."""
    def unit(v):
        v = _floats(v)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    x, y = unit(features), unit(positives)
    out = np.full(len(x), -np.inf)
    step = max(1, _CHUNK // max(len(x), 1))
    for start in range(0, len(y), step):
        out = np.maximum(out, (x @ y[start:start + step].T).max(axis=1))
    return out


def reciprocal_rank_fusion(signals: list[np.ndarray], k: float = 60.0) -> np.ndarray:
    """Σ_s 1 / (k + rank_s), ranks 1 = highest value, ties averaged (Cormack et al., SIGIR 2009)."""
    return sum(1.0 / (k + rankdata(-np.asarray(s, dtype=np.float64), method="average")) for s in signals)


def weighted_order(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An order drawn by successive sampling without replacement, each next row with probability
    ∝ its weight (Efraimidis & Spirakis 2006, as Gumbel-top-k). Zero weights come last, in row order."""
    w = np.asarray(weights, dtype=np.float64)
    with np.errstate(divide="ignore"):
        keys = np.log(w) + rng.gumbel(size=len(w))
    keys = np.where(w > 0, keys, -np.inf)
    return np.lexsort((np.arange(len(w)), -keys))


def interleave(a: int, b: int) -> np.ndarray:
    """Positions merging a primary list of length a with a secondary one of length b, the secondary
    spread evenly (item j of b at about (j + 1) / (b + 1) of the way through)."""
    keys = np.concatenate([(np.arange(a) + 1) / (a + 1), (np.arange(b) + 1) / (b + 1)])
    tiebreak = np.concatenate([np.zeros(a), np.ones(b)])
    return np.lexsort((tiebreak, keys))


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5 + 1e-9))
