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

from patchcfg.active.rows import RowFeatures, Selection
from patchcfg.active.scores import predicted_labels

_CHUNK = 1 << 22  # elements per block of pairwise products
_KEEP = 1 << 25  # reference rows (labelled, positives) up to this many entries are read once, into memory


def _floats(a: np.ndarray) -> np.ndarray:
    """float32 stays float32 (half the memory of a copy for large feature matrices); else float64."""
    a = np.asarray(a)
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float64)


def selection(features, rows=None, chunk_rows: int | None = None) -> Selection:
    """``features`` (an array, :class:`RowFeatures` or a :class:`Selection`) restricted to ``rows``
    (None: every row), planned for reading in blocks of ``chunk_rows`` rows."""
    if isinstance(features, Selection):
        if rows is not None:
            raise ValueError("a Selection is already restricted to its rows")
        return features if not chunk_rows else features.features.with_chunk_rows(chunk_rows).select(features.rows)
    if not isinstance(features, RowFeatures):
        features = RowFeatures(_floats(features))
    return features.with_chunk_rows(chunk_rows).select(rows)


def _reference_blocks(y, chunk: int):
    """Blocks of at most ``chunk`` rows of ``y`` (an array or a :class:`Selection`), working dtype."""
    if isinstance(y, Selection):
        for _, block in y.blocks():
            for start in range(0, len(block), chunk):
                yield block[start:start + chunk]
    else:
        for start in range(0, len(y), chunk):
            yield y[start:start + chunk]


def _reference(y, step: int, prepare):
    """A function giving ``prepare(block)`` for each block of ``step`` rows of ``y`` (the reference
    rows: an array, :class:`RowFeatures` or :class:`Selection`). Rows up to ``_KEEP`` entries are read
    and prepared once; more are read again, block by block, at each call."""
    if isinstance(y, RowFeatures):
        y = y.select()
    if isinstance(y, Selection) and len(y) * y.features.shape[1] <= _KEEP:
        y = y.take()
    if isinstance(y, Selection):
        return lambda: (prepare(b) for b in _reference_blocks(y, step))
    kept = [prepare(b) for b in _reference_blocks(_floats(y), step)]
    return lambda: kept


def _one_thread():
    """BLAS on one thread: a matrix-vector pass is bound by memory, and a second BLAS thread on a
    busy 2-core machine waits more than it helps (5x slower, measured)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


class BadgeSampler:
    """BADGE: k-means++ seeding on gradient embeddings (Ash et al., ICLR 2020, "Deep Batch Active
    Learning by Diverse, Uncertain Gradient Lower Bounds").

    The embedding of a row is the gradient of the loss with respect to the last layer's weights,
    if the model's own prediction were the label: g = (p - y_hat) ⊗ h, with h the penultimate
    features and y_hat = round(p) for sigmoid (multi-hot) outputs, the one-hot argmax for softmax
    (``exclusive=True``). Its norm is large where the model is unsure; k-means++ seeding (the first
    pick has the largest norm, each next one is drawn with probability ∝ its squared distance to
    the nearest pick, Arthur & Vassilvitskii 2007) then spreads the picks out. g is never built:
    <a_i ⊗ h_i, a_j ⊗ h_j> = (a_i · a_j)(h_i · h_j), and h · h_j is computed block by block
    (``chunk_rows`` rows at a time), so memory stays O(rows · classes) besides one block.

    Only the distances to the first pick are computed for every row. Later draws are exact by
    rejection: a row's distance to its nearest pick only shrinks, so the stored one is an upper
    bound; a row drawn ∝ its bound is brought up to date against the picks made since and kept
    with probability (its distance / its bound), which draws it ∝ its distance, as k-means++ does.
    After ``max_rejections`` rejections in one draw every row is brought up to date (one pass).

    ``scores_``: the squared distance of each pick's embedding to the nearest earlier pick when it
    was drawn (for the first pick: its squared norm).
    """

    max_rejections = 64

    def __init__(self, n: int, exclusive: bool = False, seed: int = 0, chunk_rows: int | None = None):
        self.n = n
        self.exclusive = exclusive
        self.seed = seed
        self.chunk_rows = chunk_rows

    def fit(self, probabilities: np.ndarray, features, rows=None) -> BadgeSampler:
        """``features``: (rows, dims) aligned with ``probabilities``, or a :class:`RowFeatures`
        whose ``rows`` are those of ``probabilities``."""
        p = np.asarray(probabilities, dtype=np.float64)
        h = selection(features, rows, self.chunk_rows)
        if len(h) != len(p):
            raise ValueError(f"{len(p)} rows of probabilities but {len(h)} rows of features")
        a = p - predicted_labels(p, self.exclusive)  # per output group when given groups
        sq_norm = (a * a).sum(axis=1) * h.sq_norms()
        rows = len(p)
        n = min(self.n, rows)
        rng = np.random.default_rng(self.seed)
        if n == 0:
            self.picks_, self.scores_ = np.zeros(0, int), np.zeros(0)
            return self
        picks = [int(np.argmax(sq_norm))]
        scores = [float(sq_norm[picks[0]])]
        picked_h = [h.features.take(h.rows[picks])[0]]

        def distances(i: np.ndarray, since: int) -> np.ndarray:
            """Squared distances of rows i (a few) to the picks from ``since`` on: (len(i), picks)."""
            hi = h.features.take(h.rows[i]).astype(np.float64)
            hp = np.asarray(picked_h[since:], dtype=np.float64)
            ai, ap = a[i], a[picks[since:]]
            return np.maximum(sq_norm[i][:, None] + sq_norm[picks[since:]][None, :]
                              - 2.0 * (ai @ ap.T) * (hi @ hp.T), 0.0)

        def full_pass(since: int) -> None:
            for j in range(since, len(picks)):
                with _one_thread():
                    dots = h.rowwise(lambda b, v=picked_h[j]: b @ v)
                dist = sq_norm + sq_norm[picks[j]] - 2.0 * (a @ a[picks[j]]) * dots
                np.minimum(bound, np.maximum(dist, 0.0), out=bound)
            bound[picks] = 0.0
            applied[:] = len(picks)

        bound = np.full(rows, np.inf)
        applied = np.zeros(rows, dtype=np.int64)  # picks each bound has seen
        full_pass(0)
        while len(picks) < n:
            current, score = self._draw(rng, bound, applied, len(picks), distances, full_pass, picks)
            picks.append(current)
            scores.append(score)
            picked_h.append(h.features.take(h.rows[[current]])[0])
            bound[current] = 0.0
            applied[current] = n
        self.picks_ = np.asarray(picks, dtype=np.int64)
        self.scores_ = np.asarray(scores, dtype=np.float64)
        return self

    def _draw(self, rng, bound, applied, made, distances, full_pass, picks) -> tuple[int, float]:
        """One k-means++ draw by rejection from the bounds; (row, its squared distance)."""
        drawn_from = bound.copy()  # the bounds the draws follow (bound itself tightens as rows are brought up to date)
        cumulative = np.cumsum(drawn_from)
        total = cumulative[-1]
        for _ in range(self.max_rejections):
            if not (total > 0 and np.isfinite(total)):
                break
            i = min(int(np.searchsorted(cumulative, rng.random() * total, side="right")), len(bound) - 1)
            stale = drawn_from[i]
            if applied[i] < made:
                since = int(applied[i])
                bound[i] = min(stale, float(distances(np.array([i]), since).min()))
                applied[i] = made
            if rng.random() * stale < bound[i]:
                return i, float(bound[i])
        full_pass(int(applied.min()))
        total = bound.sum()
        if total > 0 and np.isfinite(total):
            i = int(rng.choice(len(bound), p=bound / total))
        else:  # every row coincides with a pick: any unpicked row will do
            i = int(rng.choice(np.setdiff1d(np.arange(len(bound)), picks)))
        return i, float(bound[i])


def _sq_norms(block: np.ndarray) -> np.ndarray:
    """Squared Euclidean norm of each row, accumulated in float64."""
    return np.einsum("ij,ij->i", block, block, dtype=np.float64)


def min_sq_distances(x, y, chunk_rows: int | None = None) -> np.ndarray:
    """For each row of x, the squared Euclidean distance to the nearest row of y. Both are arrays,
    :class:`RowFeatures` or :class:`Selection`, read in blocks (``chunk_rows`` rows of x against
    as many rows of y as keep a block of products near 4M entries)."""
    xs = selection(x, chunk_rows=chunk_rows)
    pairs = _reference(y, max(1, _CHUNK // xs.features.chunk_rows), lambda b: (b, _sq_norms(b)))

    def nearest(block: np.ndarray) -> np.ndarray:
        xx = _sq_norms(block)
        out = np.full(len(block), np.inf)
        for yb, yy in pairs():
            out = np.minimum(out, (xx[:, None] + yy[None, :] - 2.0 * (block @ yb.T)).min(axis=1))
        return out

    return np.maximum(xs.rowwise(nearest), 0.0)


class KCenterGreedy:
    """k-center greedy (Sener & Savarese, ICLR 2018, "Active Learning for Convolutional Neural
    Networks: A Core-Set Approach"): repeatedly pick the row farthest (Euclidean, in feature
    space) from every labelled row and every earlier pick. With no labelled rows the first pick is
    drawn at random (seeded).

    The greedy loop is lazy (as lazy greedy for submodular maximisation, Minoux 1978): a row's
    distance to its nearest centre (labelled row or pick) only shrinks as centres are added, so a
    stored value is an upper bound. The bounds start from the distances to a sample of
    ``first_labelled`` labelled rows (or to a first random pick), computed for every row block by
    block (``chunk_rows`` rows at a time); each step compares the stale rows with the largest
    bounds (a few rows, read from the features) with the next centres they have not seen (as many
    as each has seen: a row whose bound soon drops below the best is compared with few centres,
    and none is compared with a centre twice), and takes the largest up-to-date value once no
    stale bound can beat or tie it (ties: the lowest row, as ``argmax``). The search looks only at
    a shortlist of the rows with the largest bounds (``first_shortlist`` rows, widened when its
    best cannot be told from the rows outside): the other rows' bounds do not change until it is
    widened. The picks are those of the eager algorithm, which compares every row with every
    labelled row and reads every row at every pick.

    ``scores_``: the distance of each pick to its nearest labelled row or earlier pick when it was
    picked (NaN for a first pick made with nothing labelled).
    """

    #: rows brought closer to date at the first try of a step (doubled at each try)
    first_refresh = 64
    #: labelled rows every candidate is compared with at first (the others: lazily, as picks are)
    first_labelled = 32
    #: rows with the largest bounds the search looks at (widened fourfold when too few)
    first_shortlist = 4096

    def __init__(self, n: int, seed: int = 0, chunk_rows: int | None = None):
        self.n = n
        self.seed = seed
        self.chunk_rows = chunk_rows

    def fit(self, features, labelled=None, rows=None) -> KCenterGreedy:
        """``features``: the candidates (an array), or :class:`RowFeatures` with the candidate
        ``rows``; ``labelled``: the labelled rows' features (an array or a :class:`Selection`)."""
        with _one_thread():  # products with few centres: bound by memory, or small (twice as fast, measured)
            return self._fit(features, labelled, rows)

    def _fit(self, features, labelled, rows) -> KCenterGreedy:
        x = selection(features, rows, self.chunk_rows)
        rows = len(x)
        n = min(self.n, rows)
        picks: list[int] = []
        scores: list[float] = []
        dims = x.features.shape[1]
        centres = np.zeros((0, dims), x.features.dtype)  # the labelled rows, then the picks
        if labelled is not None and len(labelled):
            if isinstance(labelled, RowFeatures):
                labelled = labelled.select()
            if isinstance(labelled, Selection) and len(labelled) * dims > _KEEP:
                bound = min_sq_distances(x, labelled, self.chunk_rows)  # too many to hold: every row, once
            else:
                centres = labelled.take() if isinstance(labelled, Selection) else _floats(labelled)
                # a spread sample first: the bounds start from it, the rest is applied lazily
                centres = centres[np.random.default_rng(0).permutation(len(centres))]
                bound = min_sq_distances(x, centres[:self.first_labelled], self.chunk_rows)
                centres = centres.astype(x.features.dtype)
            applied = np.full(rows, min(len(centres), self.first_labelled) if len(centres) else 0, np.int64)
        else:
            bound = np.full(rows, np.inf)
            if n:
                first = int(np.random.default_rng(self.seed).integers(rows))
                picks.append(first)
                scores.append(np.nan)
                centres = x.features.take(x.rows[[first]])
                xx = x.sq_norms()
                dots = x.rowwise(lambda b: b @ centres[0])
                bound = np.maximum(xx + xx[first] - 2.0 * dots, 0.0)
                bound[first] = -1.0
            applied = np.full(rows, len(centres), np.int64)  # centres each bound has seen
        shortlist = _Shortlist(bound, self.first_shortlist)
        while len(picks) < n:
            current = self._farthest(x, bound, applied, centres, len(centres), shortlist)
            picks.append(current)
            scores.append(float(np.sqrt(max(bound[current], 0.0))))
            bound[current] = -1.0
            applied[current] = np.iinfo(np.int64).max  # never brought up to date again
            centres = np.concatenate([centres, x.features.take(x.rows[[current]])])
        self.picks_ = np.asarray(picks, dtype=np.int64)
        self.scores_ = np.asarray(scores, dtype=np.float64)
        return self

    def _farthest(self, x, bound, applied, centres, made: int, shortlist: _Shortlist) -> int:
        """The row with the largest distance to its nearest centre (lowest row among ties),
        bringing bounds closer to date where needed (``bound`` and ``applied`` are updated)."""
        k = self.first_refresh
        shortlist.drop_beaten(bound)
        rows = shortlist.rows
        while True:
            listed = bound[rows]
            fresh = applied[rows] >= made
            best = listed[fresh].max(initial=-np.inf)
            within = listed >= best  # the others cannot win this pick: bounds only shrink
            rows, listed, fresh = rows[within], listed[within], fresh[within]
            contenders = np.flatnonzero(~fresh)  # stale rows that may beat or tie the best
            if len(contenders):
                if len(contenders) > k:
                    contenders = contenders[np.argpartition(-listed[contenders], k - 1)[:k]]
                self._bring_closer_to_date(x, bound, applied, centres, made, rows[contenders])
                k *= 2
            elif best > shortlist.ceiling or shortlist.whole:
                return int(rows[listed == best].min())
            else:  # a row outside the shortlist may tie with the best
                shortlist.widen(bound)
                rows = shortlist.rows

    def _bring_closer_to_date(self, x, bound, applied, centres, made: int, stale: np.ndarray) -> None:
        """Lower the bounds of the ``stale`` rows by the next centres each has not seen: as many as
        it has seen, at least ``first_labelled``."""
        seen = applied[stale]
        first = int(seen.min())
        for since in first + np.flatnonzero(np.bincount(seen - first)):
            rows = stale[seen == since]
            until = min(made, since + max(int(since), self.first_labelled))
            fresh = min_sq_distances(x.features.select(x.rows[rows]), centres[since:until], self.chunk_rows)
            bound[rows] = np.minimum(bound[rows], fresh)
            applied[rows] = until


class _Shortlist:
    """Rows with the largest bounds (``rows``: the ``size`` largest when made) and the largest bound
    among the others (``ceiling``; -inf when ``whole``, every row on the list). Valid while only
    listed rows change."""

    def __init__(self, bound: np.ndarray, size: int):
        self.size = size
        self.widen(bound, grow=1)

    def drop_beaten(self, bound: np.ndarray) -> None:
        """Drop the listed rows whose bounds have fallen to the ceiling or below: no longer above
        every row outside, they cannot be the farthest before the list is widened."""
        if not self.whole:
            self.rows = self.rows[bound[self.rows] > self.ceiling]

    def widen(self, bound: np.ndarray, grow: int = 4) -> None:
        self.size = min(self.size * grow, len(bound))
        self.whole = self.size == len(bound)
        if self.whole:
            self.rows, self.ceiling = np.arange(len(bound)), -np.inf
        else:
            order = np.argpartition(-bound, self.size)
            self.rows, self.ceiling = order[:self.size], float(bound[order[self.size]])


def nearest_positive_similarity(features, positives, rows=None, chunk_rows: int | None = None) -> np.ndarray:
    """For each row (of ``rows``), the cosine similarity to its nearest known positive; both read
    in blocks (``features`` an array or :class:`RowFeatures`; ``positives`` an array or a
    :class:`Selection`)."""
    x = selection(features, rows, chunk_rows)

    def unit(v):
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    units = _reference(positives, max(1, _CHUNK // x.features.chunk_rows), unit)

    def best(block: np.ndarray) -> np.ndarray:
        block = unit(block)
        out = np.full(len(block), -np.inf)
        for yb in units():
            out = np.maximum(out, (block @ yb.T).max(axis=1))
        return out

    return x.rowwise(best)


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
