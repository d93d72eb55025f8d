"""``probcover``: ProbCover (Yehuda, Dekel, Hacohen & Weinshall, NeurIPS 2022, "Active Learning
Through a Covering Lens"): with few labels, pick the rows whose δ-balls cover the most of the data
not yet covered (greedy maximum coverage).

On the L2-normalised features of the rows that are candidates or labelled (a known cell, not a
candidate, and among the training rows when the query names them, as ``auto`` does: see
:func:`patchcfg.active.neighbours.labelled_rows`), as the paper:

- the ball radius δ is chosen from the features: pseudo-labels by k-means, k = the number of
  classes (the columns of ``labels``, else of ``probabilities``; at least 2, since one class still
  has positives and negatives), and δ is the largest radius at which at least α = 95% of the balls
  are pure (hold only rows of their centre's pseudo-label). A ball is {x' : |x - x'| < δ}, so a
  row's ball is pure while δ is at most its distance to the nearest row of another pseudo-label,
  and δ is the 95% quantile (from the top) of those distances: exactly the paper's choice, which
  scans a grid of δ;
- the δ-graph joins rows closer than δ (each row to itself); the rows covered by labelled rows are
  removed; then, greedily, the candidate whose ball holds the most rows not yet covered is picked
  and what it covers removed. Ties: the candidate nearer its nearest other row (denser) first, then
  the lower row. Once everything is covered the next picks cover nothing (score 0): the densest
  candidates left, in that order.

At scale, work and memory stay bounded. The δ-graph of every row needs every pair's distance (for
a million rows about two hours of these 2 cores for the products alone, and edges beyond memory),
and an approximate index over a million rows takes minutes to build here (``benchmarks/scale.py
--only neighbours``), so δ, the graph and the coverage are those of a uniform sample of
``max_rows`` of the rows (all of them when fewer): ProbCover on the sample, its picks among the
sample's candidates. δ is measured on ``purity_rows`` of them (each against the whole sample). The
graph holds at most ``max_edges`` edges: where balls are so wide that it would hold more, it is
built on fewer of the sampled rows (the radius kept). Rows near labelled rows outside the sample
count as covered (at most ``max_rows`` of those labelled rows are compared: a uniform sample
beyond). Score: how many rows (of the sample, where sampled) the pick newly covers; should a
query ask for more picks than the sample has candidates, the rest are drawn at random (score NaN).
"""

from __future__ import annotations

import math

import numpy as np

from patchcfg.active.strategies import Strategy, register


@register
class ProbCover(Strategy):
    name = "probcover"
    needs = ("features",)
    ranks_first = "rows whose feature ball covers the most rows not yet covered"
    sigmoid_score = "rows newly covered by its δ-ball (δ: 95% of balls pure w.r.t. k-means pseudo-labels)"
    softmax_score = "same"

    #: the purity the radius keeps (the paper's α)
    alpha = 0.95
    #: the graph is built on at most this many rows (a uniform sample of candidates and labelled rows)
    max_rows = 20_000
    #: δ is measured on at most this many of them (each against every sampled row)
    purity_rows = 4096
    #: the most edges of the graph (4 bytes each once built, about 20 while it is built: 0.7 GB)
    max_edges = 1 << 25

    def select(self, query, k, rng):
        from patchcfg.active.neighbours import BLOCK_ROWS, labelled_rows, nearest_other_group, unit_rows
        from patchcfg.active.rows import as_row_features

        features, rows = as_row_features(query.features), query.rows
        seed = int(rng.integers(2**31))
        draw = np.random.default_rng(seed)
        k = min(int(k), len(rows))
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0), [], None
        classes = self.classes(query)
        candidate = np.zeros(len(features), bool)
        candidate[rows] = True
        labelled = labelled_rows(query, candidate)
        relevant = np.flatnonzero(candidate | labelled)
        sample = relevant if len(relevant) <= self.max_rows else np.sort(
            draw.choice(relevant, self.max_rows, replace=False))
        x = unit_rows(features.take(sample))
        pseudo = self._pseudo_labels(x, classes, seed)

        # rows in a random order: δ from the first purity_rows, a smaller graph from the first rows
        order = draw.permutation(len(sample))
        sample, x, pseudo = sample[order], x[order], pseudo[order]
        measured = min(len(sample), self.purity_rows)
        nearest_other = nearest_other_group(x, pseudo, measured, BLOCK_ROWS)
        pure = math.ceil(self.alpha * measured - 1e-9)  # balls that must be pure
        sq_delta = float(np.sort(nearest_other)[::-1][pure - 1]) if pure else float(np.inf)

        indptr, indices, nearest, size = self._graph(x, sq_delta)
        sample, x = sample[:size], x[:size]
        covered = np.zeros(size, bool)
        inside = labelled[sample]
        for i in np.flatnonzero(inside):
            covered[indices[indptr[i]:indptr[i + 1]]] = True
        outside = np.setdiff1d(np.flatnonzero(labelled), sample)
        if len(outside):
            if len(outside) > self.max_rows:
                outside = np.sort(draw.choice(outside, self.max_rows, replace=False))
            covered |= _within(x, features.select(outside), sq_delta)

        picks, scores = self._greedy(indptr, indices, nearest, sample, candidate[sample], covered, k)
        if len(picks) < k:  # more picks than sampled candidates: the rest at random
            left = np.setdiff1d(rows, picks)
            extra = np.sort(draw.choice(left, k - len(picks), replace=False))
            picks, scores = np.concatenate([picks, extra]), np.concatenate([scores, np.full(len(extra), np.nan)])
        positions = np.searchsorted(rows, picks)
        return positions, scores, [query.label] * len(positions), None

    @staticmethod
    def classes(query) -> int:
        """k of the pseudo-labels: the number of classes, at least 2."""
        from patchcfg.errors import UserError

        source = query.labels if query.labels is not None else query.probabilities
        if source is None:
            raise UserError(f"{query.label} needs the number of classes (labels or probabilities) for its "
                            "k-means pseudo-labels")
        return max(2, int(np.shape(source)[1]))

    @staticmethod
    def _pseudo_labels(x: np.ndarray, classes: int, seed: int) -> np.ndarray:
        """k-means pseudo-labels of ``x`` (rows in table order), k = ``classes``."""
        from sklearn.cluster import KMeans

        from patchcfg.active.neighbours import one_thread

        if len(x) <= classes:
            return np.arange(len(x))
        with one_thread():
            return KMeans(n_clusters=classes, random_state=seed, n_init="auto").fit(x).labels_

    def _graph(self, x: np.ndarray, sq_delta: float):
        """The δ-graph of the first rows of ``x``: all, or as many as keep it within ``max_edges``
        (CSR, each row's squared distance to its nearest other row, the rows used)."""
        from patchcfg.active.neighbours import GraphTooLarge, radius_graph

        size = len(x)
        while True:
            try:
                return (*radius_graph(x[:size], sq_delta, self.max_edges), size)
            except GraphTooLarge as wide:  # edges grow with the square of the rows
                size = max(1, min(size - 1, int(size * math.sqrt(0.8 * self.max_edges / wide.expected))))

    @staticmethod
    def _greedy(indptr, indices, nearest, sample, pickable, covered, k):
        """Greedy maximum coverage: up to ``k`` rows of ``sample`` (where ``pickable``) and how many
        rows each newly covers."""
        size = len(sample)
        uncovered = (~covered).astype(np.int64)
        degree = np.add.reduceat(uncovered[indices], indptr[:-1]) if size else np.zeros(0, np.int64)
        tie = np.empty(size, np.int64)  # higher first: the nearer its nearest other row, then the lower row
        tie[np.lexsort((sample, nearest))] = np.arange(size)[::-1]
        pickable = pickable.copy()
        picks, scores = [], []
        while len(picks) < k and pickable.any():
            key = np.where(pickable, degree * (size + 1) + tie, -1)
            cur = int(np.argmax(key))
            ball = indices[indptr[cur]:indptr[cur + 1]]
            new = ball[~covered[ball]]
            covered[new] = True
            if len(new):
                reach = np.concatenate([indices[indptr[y]:indptr[y + 1]] for y in new])
                degree -= np.bincount(reach, minlength=size)
            picks.append(int(sample[cur]))
            scores.append(float(len(new)))
            pickable[cur] = False
        return np.asarray(picks, dtype=np.int64), np.asarray(scores, dtype=np.float64)


def _within(x: np.ndarray, reference, sq_radius: float) -> np.ndarray:
    """For each row of ``x`` (unit rows), whether a row of ``reference`` (a :class:`Selection`,
    normalised block by block) lies at squared distance below ``sq_radius``."""
    from patchcfg.active.neighbours import BLOCK_ROWS, unit_rows

    out = np.zeros(len(x), bool)
    xx = np.einsum("ij,ij->i", x, x)
    for _, block in reference.blocks():
        for start in range(0, len(block), BLOCK_ROWS):
            y = unit_rows(block[start:start + BLOCK_ROWS]).astype(x.dtype)
            products = x @ y.T
            products *= -2
            products += xx[:, None]
            products += np.einsum("ij,ij->i", y, y)[None, :]
            out |= (products < sq_radius).any(axis=1)
    return out
