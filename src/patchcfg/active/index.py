"""Nearest rows of the cached features by cosine similarity: exact up to :data:`EXACT_ROWS` rows,
an HNSW graph above (Malkov & Yashunin, IEEE TPAMI 2018, "Efficient and robust approximate nearest
neighbor search using Hierarchical Navigable Small World graphs"), built with FAISS
(``IndexHNSWFlat``, inner product on the L2-normalised features).

Measured by ``benchmarks/scale.py --only neighbours`` on 1,000,000 x 512 float32 features with an
encoder's kind of structure, on 2 cores (see ``docs/benchmarks.md`` for every library): the exact
blockwise search takes 0.9 s a query (p95), the FAISS HNSW graph (M = 32, efConstruction = 40)
builds in 156 s, holds 2.2 GB above the mapped features and answers a query in 0.63 ms (p95) at
recall@10 0.968 against the exact search (efSearch = 64).

:class:`FeatureIndex` over ``embed/features.npy`` (:meth:`FeatureIndex.open`) builds its graph once
and caches it beside the features (``features.index``, written atomically, then
``features.index.json``: the size, mtime, dtype and shape of the features it was built from, so
that a new embed rebuilds it); a cached graph is loaded memory-mapped (its vectors stay in the
page cache, as the features do). Without FAISS (the ``index`` extra: ``pip install
'patchcfg[index]'``) every search is exact, with one warning.

A search may be restricted (``exclude``, ``allowed``): when the rows it may return are at most
:data:`EXACT_ROWS` it is exact on those rows; otherwise the graph skips the others (a FAISS id
selector) with ``efSearch`` widened by the share left out, and a query that still finds fewer rows
than it asks is answered exactly.
"""

from __future__ import annotations

import json
import math
import os
import threading
import warnings
from pathlib import Path

import numpy as np

from patchcfg.active.neighbours import most_similar, unit_rows

#: Up to this many rows (searched at once) the search is exact: on 2 cores a blockwise pass over
#: 50,000 x 512 float32 rows takes about 40 ms a query (0.9 s at a million rows), while a graph
#: takes about 3 s to build at 50,000 rows; below it, results are exactly those of brute force.
EXACT_ROWS = 50_000
#: HNSW links per node (FAISS's M; 2M on the bottom layer) and the build's candidate list
HNSW_M = 32
EF_CONSTRUCTION = 40
#: the search's candidate list (at least k; widened for a restricted search)
EF_SEARCH = 64
#: the widest candidate list of a restricted search (beyond it the search is exact on the rows allowed)
MAX_EF_SEARCH = 8192
#: rows normalised and added to the graph at a time (65,536 x 512 float32 = 128 MB)
ADD_ROWS = 65_536

_warned = False
_warn_lock = threading.Lock()


def _faiss():
    """The ``faiss`` module, or None (warned once per process) where it does not import."""
    global _warned
    try:
        import faiss
    except ImportError as error:
        with _warn_lock:
            if not _warned:
                _warned = True
                warnings.warn(
                    f"faiss is not installed ({error}): nearest-neighbour searches over more than "
                    f"{EXACT_ROWS:,} rows are exact, so slower (install it with "
                    "`pip install 'patchcfg[index]'` or `pip install faiss-cpu`)", RuntimeWarning, stacklevel=3)
        return None
    return faiss


def _as_mask(which, n: int) -> np.ndarray | None:
    """A bool (n,) mask from None, a bool mask or row indices."""
    if which is None:
        return None
    which = np.asarray(which)
    if which.dtype == bool:
        if which.shape != (n,):
            raise ValueError(f"a row mask needs {n} entries, got {which.shape}")
        return which
    mask = np.zeros(n, bool)
    mask[which.astype(np.int64).reshape(-1)] = True
    return mask


class FeatureIndex:
    """Cosine nearest rows of ``features`` ((rows, dims), any array; a memmap is read block by
    block). ``path``: where the graph is cached (None: kept in memory only); ``source``: the file
    ``features`` were read from, whose size and mtime key the cache (default: ``features.filename``)."""

    def __init__(self, features, path: str | os.PathLike | None = None, source: str | os.PathLike | None = None):
        features = features if isinstance(features, np.ndarray) else np.asarray(features)
        if features.ndim != 2:
            raise ValueError(f"features must be 2-d (rows, dims), got shape {features.shape}")
        self.features = features
        self.path = None if path is None else Path(path)
        filename = getattr(features, "filename", None)
        self.source = Path(source) if source is not None else Path(filename) if filename else None
        self._graph = None
        self._lock = threading.Lock()
        #: "exact" (small, no FAISS) or "hnsw" (once built or loaded); "loaded" says it came from the cache
        self.kind = "exact"
        self.loaded = False

    @classmethod
    def open(cls, features_path: str | os.PathLike, index_path: str | os.PathLike | None = None) -> FeatureIndex:
        """The index of a cached ``features.npy`` (memory-mapped), its graph at ``index_path``
        (default: ``features.index`` beside it), built or loaded at the first search above
        :data:`EXACT_ROWS` (or by :meth:`prepare`)."""
        features_path = Path(features_path)
        features = np.load(features_path, mmap_mode="r")
        return cls(features, index_path or features_path.with_suffix(".index"), features_path)

    def __len__(self) -> int:
        return len(self.features)

    @property
    def key_path(self) -> Path | None:
        return None if self.path is None else self.path.with_name(self.path.name + ".json")

    @property
    def exact(self) -> bool:
        """Whether a search over every row is exact (few rows, or no FAISS)."""
        return len(self.features) <= EXACT_ROWS or _faiss() is None

    def key(self) -> dict:
        """What the cached graph is valid for: the features' file (size, mtime) and shape, the graph's parameters."""
        out = {"shape": list(self.features.shape), "dtype": str(self.features.dtype),
               "graph": {"library": "faiss", "type": "IndexHNSWFlat", "metric": "inner_product",
                         "normalised": True, "M": HNSW_M, "ef_construction": EF_CONSTRUCTION}}
        if self.source is not None:
            stat = os.stat(self.source)
            out["features"] = {"path": self.source.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        return out

    # ----------------------------------------------------------------- the graph

    def prepare(self):
        """Build or load the graph where the rows exceed :data:`EXACT_ROWS` (once; None where the
        search is exact). Safe to call from a background thread."""
        if len(self.features) <= EXACT_ROWS:
            return None
        with self._lock:
            if self._graph is None:
                faiss = _faiss()
                if faiss is None:
                    return None
                self._graph = self._load(faiss) or self._build(faiss)
                self.kind = "hnsw"
            return self._graph

    def _load(self, faiss):
        """The cached graph when its key matches these features, memory-mapped; else None."""
        if self.path is None or not self.path.is_file() or not self.key_path.is_file():
            return None
        try:
            saved = json.loads(self.key_path.read_text())
            if saved.get("key") != self.key() or saved.get("bytes") != self.path.stat().st_size:
                return None
            graph = faiss.read_index(str(self.path), getattr(faiss, "IO_FLAG_MMAP_IFC", 0))
        except (OSError, ValueError, RuntimeError):  # unreadable or another format: built again
            return None
        if graph.ntotal != len(self.features) or graph.d != self.features.shape[1]:
            return None
        self.loaded = True
        return graph

    def _build(self, faiss):
        """Build the graph on the normalised rows, block by block, and cache it where a path is given."""
        from patchcfg.atomic import atomic_write_json, atomic_write_stream

        graph = faiss.IndexHNSWFlat(self.features.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = EF_CONSTRUCTION
        for start in range(0, len(self.features), ADD_ROWS):
            block = unit_rows(self.features[start:start + ADD_ROWS])
            graph.add(np.ascontiguousarray(block, dtype=np.float32))
        if self.path is None:
            return graph
        try:
            key = self.key()
            atomic_write_stream(self.path, lambda handle: faiss.write_index(graph, faiss.PyCallbackIOWriter(handle.write)))
            atomic_write_json(self.key_path, {"key": key, "bytes": self.path.stat().st_size,
                                              "faiss": getattr(faiss, "__version__", None)})
        except Exception as error:  # noqa: BLE001 - a read-only folder, a full disk: searched from memory
            warnings.warn(f"the nearest-neighbour index could not be cached at {self.path} ({error}); it "
                          "is kept in memory and built again next time", RuntimeWarning, stacklevel=2)
            return graph
        mapped = self._load(faiss)  # the vectors mapped from the file, not held in memory
        self.loaded = False
        return mapped if mapped is not None else graph

    # ----------------------------------------------------------------- searching

    def search(self, queries, k: int, exclude=None, allowed=None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` rows most similar (cosine) to each of ``queries`` ((q, dims) or (dims,),
        normalised here), never a row of ``exclude`` (indices or a bool mask) and, with ``allowed``
        (a bool mask or indices), only those rows: ``(similarities, rows)``, (q, k) float32 and
        int64, most similar first (ties: the lower row first), padded with -inf and -1 where
        fewer rows may be returned."""
        q = unit_rows(np.atleast_2d(np.asarray(queries, np.float32)))
        n, k = len(self.features), int(k)
        if q.shape[1] != self.features.shape[1]:
            raise ValueError(f"queries have {q.shape[1]} dimensions, the features {self.features.shape[1]}")
        mask = _as_mask(allowed, n)
        banned = _as_mask(exclude, n)
        if banned is not None:
            mask = ~banned if mask is None else mask & ~banned
        count = n if mask is None else int(mask.sum())
        if count <= EXACT_ROWS or k <= 0:
            return most_similar(self.features, q, k, None if mask is None else np.flatnonzero(mask))
        graph = self.prepare()
        if graph is None:
            return most_similar(self.features, q, k, None if mask is None else np.flatnonzero(mask))
        return self._search_graph(graph, q, k, mask, count)

    def _search_graph(self, graph, q: np.ndarray, k: int, mask, count: int):
        import faiss

        ef = math.ceil(max(EF_SEARCH, k) * len(self.features) / count)
        if ef > MAX_EF_SEARCH:
            return most_similar(self.features, q, k, np.flatnonzero(mask))
        params = faiss.SearchParametersHNSW(efSearch=ef)
        if mask is not None:
            selector = faiss.IDSelectorBitmap(np.packbits(mask, bitorder="little"))
            params.sel = selector
        sims, rows = graph.search(q, k, params=params)
        rows = rows.astype(np.int64, copy=False)
        sims = np.where(rows >= 0, sims, -np.inf).astype(np.float32, copy=False)
        order = np.lexsort((np.where(rows >= 0, rows, np.iinfo(np.int64).max), -sims), axis=-1)
        sims, rows = np.take_along_axis(sims, order, axis=1), np.take_along_axis(rows, order, axis=1)
        short = np.flatnonzero((rows < 0).any(axis=1))  # found fewer than asked: answered exactly
        if len(short):
            exact = most_similar(self.features, q[short], k, None if mask is None else np.flatnonzero(mask))
            sims[short], rows[short] = exact
        return sims, rows


def mean_knn_distance(x: np.ndarray, k: int) -> np.ndarray:
    """For each of the unit rows ``x``, the mean Euclidean distance to its ``k`` nearest other rows:
    :func:`patchcfg.active.neighbours.mean_knn_distance` (exact) up to :data:`EXACT_ROWS` rows, an
    in-memory graph of ``x`` above (``|a - b|² = 2 - 2 a·b`` for unit rows)."""
    from patchcfg.active import neighbours

    x = np.asarray(x)
    index = FeatureIndex(x)
    if index.exact:
        return neighbours.mean_knn_distance(x, k)
    n = len(x)
    if not 1 <= k < n:
        raise ValueError(f"k must lie in [1, {n - 1}] for {n} rows (got {k})")
    out = np.empty(n, dtype=np.float64)
    step = 4096
    for a in range(0, n, step):
        b = min(a + step, n)
        sims, rows = index.search(x[a:b], k + 1)
        other = (rows != np.arange(a, b)[:, None]) & (rows >= 0)
        other &= np.cumsum(other, axis=1) <= k  # the first k rows that are not the row itself
        d = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * sims.astype(np.float64)))
        out[a:b] = np.where(other, d, 0.0).sum(axis=1) / np.maximum(other.sum(axis=1), 1)
    return out
