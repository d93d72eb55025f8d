"""More like this: the unlabelled rows nearest to a selection, by cosine similarity on the cached features.

The query is the mean of the selected rows' normalised features (``patchcfg embed``'s cached
features, as the learner holds them: memory-mapped when the table's rows are the cached rows in
order). Up to :data:`patchcfg.active.index.EXACT_ROWS` rows, every row is scored in blocks of
:data:`BLOCK` rows (one matrix product each, on the mapped file: nothing but the rows' norms and
one similarity per row is kept, so memory stays bounded at any table size); the norms are computed
once per features version. Above it the nearest candidates come from the features' HNSW graph
(:class:`patchcfg.active.index.FeatureIndex`: cached beside ``features.npy`` when they are the
mapped file, else built in memory), built in the background when the app starts; until it is
ready the search scores every row as below. Candidates are
the rows with no known label, not excluded, with features, not among the query and not held by
another annotator; the nearest are handed to this annotator like a queue page (reserved for
``label.reserve_seconds``).

Near duplicates (cosine similarity to a shown row at least ``label.duplicate_threshold``) are
gathered behind the most similar of them: one group per tile, so that a person labels them once.
"""

from __future__ import annotations

import threading
import time
import weakref
from pathlib import Path

import numpy as np

from patchcfg.label.errors import RequestError

#: Rows per matrix product: 16,384 rows of 512 float32 features are 32 MiB of the mapped file.
BLOCK = 16_384
#: At most this many nearest candidates are grouped into near duplicates for one page.
MAX_WINDOW = 4096
#: At most this many rows in one query, and this many groups in one answer.
MAX_QUERY_ROWS = 10_000
MAX_N = 1000


def row_norms(features, block: int = BLOCK) -> np.ndarray:
    """(rows,) float32 Euclidean norms, read block by block (a mapped file stays mapped)."""
    out = np.empty(len(features), np.float32)
    for start in range(0, len(features), block):
        x = np.asarray(features[start:start + block], dtype=np.float32)
        out[start:start + block] = np.sqrt(np.einsum("ij,ij->i", x, x))
    return out


def normalised(x, norms: np.ndarray | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1) if norms is None else norms
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n[:, None] > 0, x / np.where(n > 0, n, 1)[:, None], 0).astype(np.float32)


def cosine_to(features, norms: np.ndarray, query: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """(rows,) float32 cosine similarity of every row to the unit vector ``query`` (NaN where a row's
    norm is 0), by blocked matrix products."""
    out = np.empty(len(features), np.float32)
    q = np.asarray(query, np.float32)
    for start in range(0, len(features), block):
        x = np.asarray(features[start:start + block], dtype=np.float32)
        out[start:start + block] = x @ q
    with np.errstate(divide="ignore", invalid="ignore"):
        out /= norms
    out[norms <= 0] = np.nan
    return out


def nearest(similarity: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` candidate rows of highest similarity, most similar first (ties: lower row first)."""
    rows = np.flatnonzero(candidates)
    if not len(rows) or k <= 0:
        return rows[:0]
    s = similarity[rows]
    if k < len(rows):
        cut = np.partition(s, len(s) - k)[len(s) - k]  # the k-th highest value
        keep = s >= cut  # every tie at the cut, then the order decides
        rows, s = rows[keep], s[keep]
    order = np.lexsort((rows, -s))
    return rows[order][:k]


def group_near_duplicates(vectors: np.ndarray, threshold: float | None, limit: int) -> list[list[int]]:
    """Greedy groups of near duplicates among unit ``vectors`` given most similar first: each one
    joins the group whose first member (its leader) it is most similar to, when that similarity is
    at least ``threshold``; otherwise it leads a new group while fewer than ``limit`` exist (else it
    is left out). Lists of indices into ``vectors``, groups in the order of their leaders."""
    if threshold is None:
        return [[i] for i in range(min(limit, len(vectors)))]
    leaders = np.empty((min(limit, len(vectors)), vectors.shape[1] if vectors.ndim == 2 else 0), np.float32)
    groups: list[list[int]] = []
    for i, v in enumerate(vectors):
        if groups:
            s = leaders[:len(groups)] @ v
            best = int(np.argmax(s))
            if s[best] >= threshold:
                groups[best].append(i)
                continue
        if len(groups) < limit:
            leaders[len(groups)] = v
            groups.append([i])
    return groups


def _ranking(similarity: np.ndarray, candidates: np.ndarray):
    """``count -> (rows, similarities)``: the nearest candidates by the similarity of every row."""
    def ranked(count: int):
        rows = nearest(similarity, candidates, count)
        return rows, similarity[rows]
    return ranked


def _searched(index, query: np.ndarray, candidates: np.ndarray):
    """``count -> (rows, similarities)``: the nearest candidates from the features' index."""
    def ranked(count: int):
        sims, rows = index.search(query, count, allowed=candidates)
        found = rows[0] >= 0
        return rows[0][found], sims[0][found]
    return ranked


class Similar:
    """The neighbour search of one app: its ``store``, ``queue`` (reservations) and ``learner``
    (the cached features)."""

    def __init__(self, store, queue, learner, threshold: float | None):
        self.store, self.queue, self.learner = store, queue, learner
        self.threshold = None if threshold is None else float(threshold)
        self._lock = threading.Lock()
        self._norms = None  # (weak reference to the features, their shape, norms)
        self._index = None  # (weak reference to the features, their shape, FeatureIndex, ready event)
        self._handed: dict[str, dict[int, float]] = {}  # client -> rows the last search held, until

    # ----------------------------------------------------------------- features

    def _features(self):
        """(snapshot, features, has_features, norms) over the table's rows; a 409 without cached
        features."""
        snapshot = self.learner.snapshot()
        features, has = snapshot.features, snapshot.has_features
        if features is None:
            learner = self.learner
            if learner.features_state in ("computing", "updating"):
                why = (f"they are being computed ({learner.features_message}); "
                       "try again when the page says features: ready")
            else:
                why = f"{learner.features_message or 'none yet'}; run `patchcfg embed` on this config first"
            raise RequestError(f"more like this needs the cached features of `patchcfg embed`: {why}", 409)
        if len(features) != len(self.store):
            raise RequestError("the cached features are being aligned with the table's rows; try again", 409)
        return snapshot, features, has, self.norms(features)

    def norms(self, features) -> np.ndarray:
        """The rows' norms, computed once per features version (the learner's aligned array)."""
        with self._lock:
            cached = self._norms
            if cached is not None and cached[0]() is features and cached[1] == features.shape:
                return cached[2]
            norms = row_norms(features)
            try:
                ref = weakref.ref(features)
            except TypeError:  # not weakly referable: keep it (it is the learner's anyway)
                ref = (lambda kept: lambda: kept)(features)
            self._norms = (ref, features.shape, norms)
            return norms

    def index(self, features, wait: bool = False):
        """The nearest-neighbour index of ``features`` once its graph is ready, when they have more
        rows than :data:`~patchcfg.active.index.EXACT_ROWS` (else None); the graph is built (or
        loaded) in a background thread the first time, or here with ``wait``."""
        from patchcfg.active import index as feature_index

        if len(features) <= feature_index.EXACT_ROWS:
            return None
        with self._lock:
            cached = self._index
            if cached is None or cached[0]() is not features or cached[1] != features.shape:
                filename = getattr(features, "filename", None)
                path = Path(filename).with_suffix(".index") if filename else None
                built = feature_index.FeatureIndex(features, path)
                ready = threading.Event()
                try:
                    ref = weakref.ref(features)
                except TypeError:
                    ref = (lambda kept: lambda: kept)(features)
                cached = self._index = (ref, features.shape, built, ready)
                if not wait:
                    threading.Thread(target=self._prepare, args=(built, ready), daemon=True).start()
        built, ready = cached[2], cached[3]
        if wait and not ready.is_set():
            self._prepare(built, ready)
        return built if ready.is_set() and built.kind == "hnsw" else None

    @staticmethod
    def _prepare(built, ready) -> None:
        try:
            built.prepare()
        finally:
            ready.set()

    def warm(self) -> None:
        """Compute the norms (and the index, for many rows) now (in the background at start), so
        that the first search is quick."""
        try:
            _, features, _, _ = self._features()
            self.index(features, wait=True)
        except Exception:  # noqa: BLE001 - no features yet, or unreadable: the search says why
            pass

    # ----------------------------------------------------------------- searching

    def parse_rows(self, text: str | None) -> list[int]:
        if not text:
            raise RequestError('give the rows to search from: rows=3 or rows=3,8,12 (row numbers)')
        parts = text.split(",")
        if len(parts) > MAX_QUERY_ROWS:
            raise RequestError(f"at most {MAX_QUERY_ROWS} rows in one query")
        rows = []
        for part in parts:
            part = part.strip()
            if not part.isdigit() or len(part) > 12:
                raise RequestError(f"rows are row numbers separated by commas, got '{part[:80]}'")
            row = self.store.check_row(int(part))
            if row not in rows:
                rows.append(row)
        return rows

    def search(self, client: str, rows: list[int], n: int) -> dict:
        """The ``n`` groups of unlabelled rows nearest to ``rows``, most similar first, reserved for
        ``client``."""
        if not 1 <= n <= MAX_N:
            raise RequestError(f"n must be between 1 and {MAX_N}, got {n}")
        snapshot, features, has, norms = self._features()
        without = [r for r in rows if not has[r] or norms[r] <= 0]
        if without:
            shown = ", ".join(map(str, without[:10])) + (" ..." if len(without) > 10 else "")
            raise RequestError(f"row{'s' if len(without) > 1 else ''} {shown} ha{'ve' if len(without) > 1 else 's'} "
                               "no cached features (added since the last `patchcfg embed`, unreadable, or all "
                               "zero): nothing to compare with", 409)
        query = normalised(features[np.asarray(rows)], norms[np.asarray(rows)]).mean(axis=0)
        length = float(np.linalg.norm(query))
        if not length > 1e-6:
            raise RequestError("the selected rows' features cancel out (their mean is zero): select fewer", 409)
        query /= length
        index = self.index(features)
        similarity = cosine_to(features, norms, query) if index is None else None
        with self.store.lock:
            table = self.store.table
            labels = table.label_matrix()
            unknown = (labels < 0).all(axis=1) if labels.shape[1] else np.ones(len(labels), bool)
            candidates = unknown & ~table.exclude
        candidates &= has & (norms > 0) & np.isfinite(norms if similarity is None else similarity)
        candidates[rows] = False
        with self.queue.lock:
            now = time.time()
            held = self.queue.held_by_others(client, now)
            if len(held):
                candidates[held] = False
            total = int(candidates.sum())
            ranked = _ranking(similarity, candidates) if index is None else _searched(index, query, candidates)
            groups, window, similarity = self._groups(features, norms, ranked, n, total)
            members = sorted({int(r) for g in groups for r in g})
            self._reserve(client, members, now)
        items = []
        with self.store.lock:
            for group in groups:
                item = self.store.row(int(group[0]))
                item["similarity"] = round(float(similarity[group[0]]), 4)
                item["group"] = [int(r) for r in group]
                item["group_similarity"] = [round(float(similarity[r]), 4) for r in group]
                items.append(self.queue.annotate(item, snapshot))
        return {"rows": items, "query": rows, "candidates": total, "searched": window,
                "index": "exact" if index is None else index.kind,
                "images": len(members), "threshold": self.threshold,
                "reserved_seconds": self.queue.reserve_seconds}

    def _groups(self, features, norms, ranked, n: int, total: int):
        """Groups (lists of rows) of the nearest candidates, how many candidates were grouped (a
        window of the nearest, widened while it holds fewer than ``n`` groups), and the similarity
        of each row in it (a mapping). ``ranked(count)``: the ``count`` nearest candidates and their
        similarities."""
        if self.threshold is None:
            rows, sims = ranked(n)
            return [[int(r)] for r in rows], min(n, total), dict(zip(rows.tolist(), sims.tolist(), strict=True))
        window = min(total, max(n, min(MAX_WINDOW, 8 * n, max(256, n))))
        while True:
            rows, sims = ranked(window)
            ascending = np.sort(rows)  # the mapped file read in order
            vectors = normalised(features[ascending], norms[ascending])
            vectors = vectors[np.searchsorted(ascending, rows)]  # back in order of similarity
            groups = [[int(rows[i]) for i in g] for g in group_near_duplicates(vectors, self.threshold, n)]
            if len(groups) >= n or window >= min(total, MAX_WINDOW):
                return groups, len(rows), dict(zip(rows.tolist(), sims.tolist(), strict=True))
            window = min(total, MAX_WINDOW, window * 4)

    def _reserve(self, client: str, rows: list[int], now: float) -> None:
        """Hold ``rows`` for ``client`` (under the queue's lock), and let go of the rows that this
        client's previous search held and this one does not show, unless the queue (or a label)
        has held them since for this client."""
        reservations = self.queue.reservations
        until = now + self.queue.reserve_seconds
        before = self._handed.get(client, {})
        keep = set(rows)
        for r, mine in before.items():
            if r not in keep and reservations.get(r) == (client, mine):
                del reservations[r]
        handed = {}
        for r in rows:
            holder = reservations.get(r)
            held_elsewhere = holder and holder[0] == client and holder[1] > now and before.get(r) != holder[1]
            reservations[r] = (client, until)
            if not held_elsewhere:  # the queue's page keeps what it holds
                handed[r] = until
        self._handed[client] = handed
