"""Exact neighbour searches on features held in memory (a sample, one cluster): blockwise
products, no index. Used by ``typiclust`` (mean distance to the K nearest rows) and ``probcover``
(distance to the nearest row of another pseudo-label; the δ-ball graph).

Squared Euclidean distances are ``|x|² + |y|² - 2 x·y`` in the features' working dtype (float32
stays float32), ``block_rows`` rows against ``block_rows`` at a time, so memory stays at a few
blocks of products besides the rows themselves. Where a result needs a pair's distance twice (the
ball radius is one of them, then every ball is tested against it) :func:`pair_blocks` computes each
pair once, in one fixed way: the same rows give bitwise the same distances on every pass.

These searches are exact and run on at most a few tens of thousands of rows (a sample, a
cluster): the blockwise products on a sample run within the query's time. :func:`most_similar`
is the exact search of :class:`patchcfg.active.index.FeatureIndex` (the cached features up to
its threshold, or the few rows a search may return); above it that index searches an HNSW graph.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

#: rows per block of products (2048 x 2048 float32 = 16 MB)
BLOCK_ROWS = 2048
#: entries per block of query-by-row similarities in :func:`most_similar` (16 MB of float32)
SIMILARITY_BLOCK = 1 << 22


def labelled_rows(query, candidate: np.ndarray) -> np.ndarray:
    """The rows a cold-start strategy counts as labelled: a known cell, not a candidate, and, where
    the query says which rows the model trains on (``schedule["train"]``: ``auto`` passes it on),
    among those: a validation row's labels teach the model nothing, so its region still needs a
    label (the papers' labelled set is the training set)."""
    if query.labels is None:
        return np.zeros(len(candidate), bool)
    known = (np.asarray(query.labels) >= 0).any(axis=1) & ~candidate
    train = (query.schedule or {}).get("train")
    return known & np.asarray(train, bool) if train is not None else known


def one_thread():
    """One thread for BLAS and OpenMP: scikit-learn's k-means on a busy 2-core machine waits for
    its second thread far more than it gains from it (5x slower with two, measured)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def unit_rows(block: np.ndarray) -> np.ndarray:
    """Each row divided by its Euclidean norm (a copy; float32 stays float32, all-zero rows stay 0)."""
    block = np.asarray(block)
    block = block if block.dtype in (np.float32, np.float64) else block.astype(np.float32)
    return block / _norms(block)[:, None]


def _norms(block: np.ndarray) -> np.ndarray:
    """The Euclidean norm of each row (1 for an all-zero row), in the block's dtype."""
    norms = np.sqrt(np.einsum("ij,ij->i", block, block))
    return np.where(norms > 0, norms, 1).astype(block.dtype, copy=False)


def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x).astype(x.dtype)


def _products(x, xx, a, b, c, d) -> np.ndarray:
    """Squared distances of rows a:b to rows c:d of ``x`` (``xx``: squared norms), clipped at 0."""
    out = x[a:b] @ x[c:d].T
    out *= -2
    out += xx[a:b, None]
    out += xx[None, c:d]
    return np.maximum(out, 0, out=out)


def pair_blocks(x: np.ndarray, first_rows: int | None = None,
                block_rows: int = BLOCK_ROWS) -> Iterator[tuple[int, int, int, int, np.ndarray]]:
    """``(a, b, c, d, D)``: the squared distances ``D`` of rows a:b to rows c:d of ``x``, for block
    pairs with a <= c (each pair of rows once: D of a diagonal block is symmetric, its lower
    triangle mirrored from the upper). With ``first_rows``, only the block rows that start below
    it: enough for the distances of rows :first_rows to every row."""
    x = np.asarray(x)
    xx = _sq_norms(x)
    n = len(x)
    stop = n if first_rows is None else min(n, first_rows)
    for a in range(0, stop, block_rows):
        b = min(a + block_rows, n)
        for c in range(a, n, block_rows):
            d = min(c + block_rows, n)
            block = _products(x, xx, a, b, c, d)
            if c == a:
                upper = np.triu(block)
                block = upper + np.triu(upper, 1).T
            yield a, b, c, d, block


def nearest_other_group(x: np.ndarray, groups: np.ndarray, first_rows: int | None = None,
                        block_rows: int = BLOCK_ROWS) -> np.ndarray:
    """For rows :first_rows (default: every row) of ``x``, the squared distance to the nearest row of
    ``x`` in another group (inf where every row is in its group)."""
    groups = np.asarray(groups)
    n = len(x) if first_rows is None else min(len(x), first_rows)
    out = np.full(len(x), np.inf, dtype=np.asarray(x).dtype)
    for a, b, c, d, block in pair_blocks(x, n, block_rows):
        other = groups[a:b, None] != groups[None, c:d]
        masked = np.where(other, block, np.inf)
        np.minimum(out[a:b], masked.min(axis=1), out=out[a:b])
        if c != a:
            np.minimum(out[c:d], masked.min(axis=0), out=out[c:d])
    return out[:n]


def radius_graph(x: np.ndarray, sq_radius: float, max_edges: int | None = None,
                 block_rows: int = BLOCK_ROWS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The graph joining rows of ``x`` at squared distance below ``sq_radius`` (each row joined to
    itself), symmetric, as CSR: ``(indptr, indices)``; and each row's squared distance to its
    nearest other row (inf for a single row).

    Raises :class:`GraphTooLarge` (with the edges expected from the rows seen) once the edges would
    exceed ``max_edges``."""
    x = np.asarray(x)
    n = len(x)
    sources: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    nearest = np.full(n, np.inf, dtype=x.dtype)
    edges, seen, pairs = 0, 0, n * (n - 1) / 2
    for a, b, c, d, block in pair_blocks(x, None, block_rows):
        if c == a:
            inside = np.triu(block < sq_radius, 1)
            off = block.copy()
            np.fill_diagonal(off, np.inf)
            np.minimum(nearest[a:b], off.min(axis=1), out=nearest[a:b])
        else:
            inside = block < sq_radius
            np.minimum(nearest[a:b], block.min(axis=1), out=nearest[a:b])
            np.minimum(nearest[c:d], block.min(axis=0), out=nearest[c:d])
        i, j = np.nonzero(inside)
        sources.append((i + a).astype(np.int32))
        targets.append((j + c).astype(np.int32))
        edges += 2 * len(i)
        seen += (b - a) * (b - a - 1) / 2 if c == a else (b - a) * (d - c)
        if max_edges is not None and edges + n > max_edges:
            raise GraphTooLarge(int(edges * pairs / max(seen, 1.0)) + n)
    loops = np.arange(n, dtype=np.int32)
    src = np.concatenate(sources + targets + [loops])
    dst = np.concatenate(targets + sources + [loops])
    del sources, targets
    order = np.argsort(src, kind="stable")
    indices = dst[order]
    del dst, order
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
    return indptr, indices, nearest


class GraphTooLarge(Exception):
    """The δ-ball graph would hold more edges than allowed; ``expected``: about how many."""

    def __init__(self, expected: int):
        super().__init__(f"about {expected} edges")
        self.expected = expected


def mean_knn_distance(x: np.ndarray, k: int, block_rows: int = BLOCK_ROWS) -> np.ndarray:
    """For each row of ``x``, the mean Euclidean distance to its ``k`` nearest other rows
    (1 <= k < len(x))."""
    x = np.asarray(x)
    n = len(x)
    if not 1 <= k < n:
        raise ValueError(f"k must lie in [1, {n - 1}] for {n} rows (got {k})")
    xx = _sq_norms(x)
    out = np.empty(n, dtype=np.float64)
    step = max(1, min(block_rows, (block_rows * block_rows) // n))  # rows x n products: a few MB
    for a in range(0, n, step):
        b = min(a + step, n)
        block = _products(x, xx, a, b, 0, n)
        block[np.arange(b - a), np.arange(a, b)] = np.inf  # not its own neighbour
        nearest = np.partition(block, k - 1, axis=1)[:, :k]
        out[a:b] = np.sqrt(nearest.astype(np.float64)).mean(axis=1)
    return out


def most_similar(x, queries: np.ndarray, k: int, rows: np.ndarray | None = None,
                 block_entries: int = SIMILARITY_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``queries`` (unit rows), the ``k`` rows of ``x`` of highest cosine similarity
    (each block of ``x`` L2-normalised as it is read: a memory-mapped matrix stays mapped), among
    ``rows`` (sorted indices; None: every row): ``(similarities, rows)``, (queries, k) float32 and
    int64, most similar first, ties: the lower row first; padded with -inf and -1 where fewer than
    ``k`` rows are searched."""
    q = np.atleast_2d(np.asarray(queries, np.float32))
    k = max(0, int(k))
    total = len(x) if rows is None else len(rows)
    best_s = np.zeros((len(q), 0), np.float32)
    best_r = np.zeros((len(q), 0), np.int64)
    step = max(256, block_entries // max(1, len(q)))
    for start in range(0, total, step):
        stop = min(start + step, total)
        ids = np.arange(start, stop) if rows is None else np.asarray(rows[start:stop], np.int64)
        block = x[start:stop] if rows is None else x[ids]
        sims = (q @ unit_rows(block).T).astype(np.float32, copy=False)
        # earlier rows first: a stable sort keeps ties in row order
        cand_s = np.concatenate([best_s, sims], axis=1)
        cand_r = np.concatenate([best_r, np.broadcast_to(ids, sims.shape)], axis=1)
        order = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(cand_s, order, axis=1)
        best_r = np.take_along_axis(cand_r, order, axis=1)
    if best_s.shape[1] < k:
        pad = k - best_s.shape[1]
        best_s = np.concatenate([best_s, np.full((len(q), pad), -np.inf, np.float32)], axis=1)
        best_r = np.concatenate([best_r, np.full((len(q), pad), -1, np.int64)], axis=1)
    return best_s, best_r


def nearest_centres(block: np.ndarray, centres: np.ndarray, unit: bool = False) -> np.ndarray:
    """Index of the nearest of ``centres`` (squared Euclidean) for each row of ``block`` (with
    ``unit``: of each row divided by its norm, without a normalised copy); ties: the lowest index."""
    products = block @ centres.T.astype(block.dtype, copy=False)
    products *= (-2 / _norms(block))[:, None] if unit else -2
    products += _sq_norms(centres).astype(block.dtype)[None, :]
    return np.argmin(products, axis=1)  # |x|² is the same for every centre
