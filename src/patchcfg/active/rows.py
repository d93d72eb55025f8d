"""Features of the label table's rows, read block by block from a (memory-mapped) matrix.

A million 512-d float32 features are 2 GB: the query never copies them whole. :class:`RowFeatures`
maps the rows of the label table to the rows of the cached matrix (an index, not a copy), and the
samplers of :mod:`patchcfg.active.batch` and the quick head read it in blocks of ``chunk_rows``
rows, each converted to float32 (float64 stays float64) on its own.

>>> features = RowFeatures(np.arange(12.0).reshape(6, 2), index=[5, 4, 3, 2, 1, 0])
>>> features.take([0, 1]).tolist()
[[10.0, 11.0], [8.0, 9.0]]
>>> features.rowwise(lambda block: block.sum(axis=1), [0, 5]).tolist()
[21.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

#: rows per block when a caller gives no ``chunk_rows`` (8192 x 512 float32 = 16 MB)
CHUNK_ROWS = 8192


def working_dtype(dtype) -> np.dtype:
    """float64 stays float64; every other dtype (float32, float16, integers) computes in float32."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


class RowFeatures:
    """``base`` (cached rows x dims, any array: a memmap is read block by block) seen through
    ``index``: row i of the label table is ``base[index[i]]``; -1 marks a row with no features
    (reading it is an error). Without an index, row i is ``base[i]``."""

    def __init__(self, base, index=None, chunk_rows: int | None = None):
        base = base if isinstance(base, np.ndarray) else np.asarray(base)
        if base.ndim != 2:
            raise ValueError(f"features must be 2-d (rows, dims), got shape {base.shape}")
        self.base = base
        self.index = None if index is None else np.asarray(index, dtype=np.int64)
        self.chunk_rows = int(chunk_rows or CHUNK_ROWS)
        self.dtype = working_dtype(base.dtype)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), self.base.shape[1])

    ndim = 2

    def __len__(self) -> int:
        return len(self.index) if self.index is not None else len(self.base)

    def __getitem__(self, which) -> np.ndarray:
        return self.take(which)

    def __array__(self, dtype=None, copy=None):
        out = self.take(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype)

    def with_chunk_rows(self, chunk_rows: int | None) -> RowFeatures:
        return self if not chunk_rows else RowFeatures(self.base, self.index, chunk_rows)

    def positions(self, which) -> np.ndarray:
        """Table rows for ``which``: None = every row, a bool mask over the rows, or indices."""
        if which is None:
            return np.arange(len(self), dtype=np.int64)
        which = np.asarray(which)
        if which.dtype == bool:
            if which.shape != (len(self),):
                raise ValueError(f"a row mask needs {len(self)} entries, got {which.shape}")
            return np.flatnonzero(which)
        return which.astype(np.int64).reshape(-1)

    def select(self, which=None) -> Selection:
        """The rows ``which`` (see :meth:`positions`), planned for reading block by block."""
        return Selection(self, self.positions(which))

    def take(self, which) -> np.ndarray:
        """The features of ``which`` (a copy, working dtype): only for a few rows."""
        return self.select(which).take()

    def rowwise(self, fn: Callable[[np.ndarray], np.ndarray], which=None) -> np.ndarray:
        """See :meth:`Selection.rowwise`."""
        return self.select(which).rowwise(fn)


class Selection:
    """Some rows of :class:`RowFeatures` (``rows``, indices into the table), with the plan that
    reads them block by block in the order of the cached matrix: rows that lie densely in it are
    read as contiguous slices (no gather; a few rows in between are computed and dropped)."""

    def __init__(self, features: RowFeatures, rows: np.ndarray):
        self.features, self.rows = features, rows
        base, step = features.base, features.chunk_rows
        if features.index is None:
            source = rows
        else:
            source = features.index[rows]
            if len(source) and source.min() < 0:
                raise ValueError(f"row {int(rows[np.argmin(source)])} has no cached features")
        if len(source) and (source.min() < 0 or source.max() >= len(base)):
            raise IndexError(f"rows must lie in [0, {len(base)}): got {int(source.min())}..{int(source.max())}")
        order = np.argsort(source, kind="stable")
        ordered = source[order]
        #: (positions into rows, slice start, slice stop, rows within the slice or None for all)
        #: or (positions, None, None, source rows to gather)
        self.parts: list[tuple] = []
        if not len(ordered):
            return
        first, last = int(ordered[0]), int(ordered[-1]) + 1
        if len(ordered) * 2 >= last - first:
            bounds = np.searchsorted(ordered, np.arange(first, last + step, step))
            for a, lo, hi in zip(range(first, last, step), bounds[:-1], bounds[1:], strict=False):
                if lo == hi:
                    continue
                b = min(a + step, last)
                local = ordered[lo:hi] - a
                self.parts.append((order[lo:hi], a, b, None if hi - lo == b - a else local))
        else:
            for lo in range(0, len(ordered), step):
                self.parts.append((order[lo:lo + step], None, None, ordered[lo:lo + step]))

    def __len__(self) -> int:
        return len(self.rows)

    def _read(self, a, b, gather) -> np.ndarray:
        base, dtype = self.features.base, self.features.dtype
        if a is None:
            return np.asarray(base[gather], dtype=dtype)
        return np.asarray(base[a:b], dtype=dtype)

    def rowwise(self, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """``fn`` applied block by block (``fn(block)`` has one entry, or row, per block row),
        assembled in the order of :attr:`rows`."""
        out = None
        for positions, a, b, local in self.parts:
            value = np.asarray(fn(self._read(a, b, local)))
            if a is not None and local is not None:
                value = value[local]
            if out is None:
                out = np.empty((len(self.rows), *value.shape[1:]), dtype=value.dtype)
            out[positions] = value
        return out if out is not None else np.zeros(0, dtype=self.features.dtype)

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(positions, block)``: the features of ``rows[positions]``, block by block."""
        for positions, a, b, local in self.parts:
            block = self._read(a, b, local)
            yield positions, (block[local] if a is not None and local is not None else block)

    def take(self) -> np.ndarray:
        """Every selected row's features (a copy): only for a few rows."""
        out = np.empty((len(self.rows), self.features.base.shape[1]), dtype=self.features.dtype)
        for positions, block in self.blocks():
            out[positions] = block
        return out

    def sq_norms(self) -> np.ndarray:
        """Squared Euclidean norm of each row, accumulated in float64."""
        return self.rowwise(lambda b: np.einsum("ij,ij->i", b, b, dtype=np.float64))

    def first_non_finite(self) -> int | None:
        """The first table row (in the cached order) holding a non-finite value, or None."""
        bad = self.rowwise(lambda b: ~np.isfinite(b).all(axis=1))
        hits = np.flatnonzero(bad)
        return int(self.rows[hits].min()) if len(hits) else None


def as_row_features(features, chunk_rows: int | None = None) -> RowFeatures | None:
    """``features`` as :class:`RowFeatures` (None stays None)."""
    if features is None:
        return None
    if isinstance(features, RowFeatures):
        return features.with_chunk_rows(chunk_rows)
    return RowFeatures(features, chunk_rows=chunk_rows)
