"""The nearest-neighbour index of the cached features: exact below its threshold, an HNSW graph
above it (cached beside features.npy, rebuilt for new features), restrictions, and exact searches
without FAISS."""

import os
import sys
import warnings

import numpy as np
import pytest

import patchcfg.active.index as feature_index
from patchcfg.active.index import FeatureIndex


def clustered(rows: int, dims: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dims)) * 2
    return (centres[rng.integers(0, 40, rows)] + rng.normal(size=(rows, dims))).astype(np.float32)


def brute_force(x, queries, k, allowed=None):
    """Rows by cosine similarity, most similar first (ties: the lower row first)."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = q.astype(np.float64) @ unit.T.astype(np.float64)
    if allowed is not None:
        sims[:, ~allowed] = -np.inf
    return np.stack([np.lexsort((np.arange(len(x)), -s))[:k] for s in sims])


#: cosine similarities closer than this are ties: float32 products may order them either way on another CPU
TIE = 1e-5


def assert_brute_force(x, queries, rows, k):
    """``rows`` are brute force's ``k`` nearest: the same rows, but for the order of near-ties
    (similarities within :data:`TIE`), where each rank's similarity must match."""
    truth = brute_force(x, queries, k)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = q.astype(np.float64) @ unit.T.astype(np.float64)
    got, want = np.take_along_axis(sims, rows, axis=1), np.take_along_axis(sims, truth, axis=1)
    np.testing.assert_allclose(got, want, rtol=0, atol=TIE)
    everyone = np.sort(sims, axis=1)[:, ::-1][:, :k + 1]
    gap = np.minimum(np.abs(np.diff(everyone, axis=1, prepend=np.inf))[:, :k], np.abs(np.diff(everyone, axis=1)))
    assert np.array_equal(rows[gap > TIE], truth[gap > TIE])  # a clear gap on both sides: the very row


def recall(found, truth) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


@pytest.fixture
def small_threshold(monkeypatch):
    monkeypatch.setattr(feature_index, "EXACT_ROWS", 1000)


def test_below_the_threshold_the_search_is_brute_force(tmp_path):
    x = clustered(3000, 16)
    np.save(tmp_path / "features.npy", x)
    index = FeatureIndex.open(tmp_path / "features.npy")
    queries = x[::150] + 0.1
    sims, rows = index.search(queries, 10)
    assert index.exact and index.kind == "exact"
    assert_brute_force(x, queries, rows, 10)
    assert np.all(np.diff(sims, axis=1) <= 0)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    assert np.allclose(sims, np.take_along_axis(q @ unit.T, rows, axis=1), atol=1e-5)
    one_s, one_r = index.search(queries[0], 5)  # one query as a vector
    assert one_r.shape == (1, 5) and np.array_equal(one_r[0], rows[0, :5])
    assert not (tmp_path / "features.index").exists()  # nothing to cache below the threshold


def test_above_the_threshold_the_graph_finds_the_nearest_rows(tmp_path, small_threshold):
    pytest.importorskip("faiss")
    x = clustered(20_000)
    np.save(tmp_path / "features.npy", x)
    index = FeatureIndex.open(tmp_path / "features.npy")
    queries = x[np.random.default_rng(1).choice(len(x), 200, replace=False)]
    sims, rows = index.search(queries, 10)
    assert index.kind == "hnsw" and not index.exact
    assert recall(rows, brute_force(x, queries, 10)) >= 0.9
    assert np.all(np.diff(sims, axis=1) <= 0) and (rows >= 0).all()


def test_the_graph_is_cached_and_rebuilt_for_new_features(tmp_path, small_threshold):
    pytest.importorskip("faiss")
    path = tmp_path / "features.npy"
    np.save(path, clustered(4000))
    first = FeatureIndex.open(path)
    first.prepare()
    assert not first.loaded and (tmp_path / "features.index").is_file()
    assert (tmp_path / "features.index.json").is_file()
    written = os.stat(tmp_path / "features.index").st_mtime_ns
    again = FeatureIndex.open(path)
    again.prepare()
    assert again.loaded and os.stat(tmp_path / "features.index").st_mtime_ns == written
    query = clustered(3, seed=5)
    assert np.array_equal(again.search(query, 10)[1], first.search(query, 10)[1])

    x = clustered(4000, seed=9)  # a new embed: same shape, other features
    np.save(path, x)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    rebuilt = FeatureIndex.open(path)
    rebuilt.prepare()
    assert not rebuilt.loaded
    assert recall(rebuilt.search(x[:50], 10)[1], brute_force(x, x[:50], 10)) >= 0.9


@pytest.mark.parametrize("graph", [False, True])
def test_excluded_rows_are_never_returned(tmp_path, monkeypatch, graph):
    if graph:
        pytest.importorskip("faiss")
        monkeypatch.setattr(feature_index, "EXACT_ROWS", 500)
    x = clustered(6000)
    np.save(tmp_path / "features.npy", x)
    index = FeatureIndex.open(tmp_path / "features.npy")
    queries = x[:40]
    allowed = np.zeros(len(x), bool)
    allowed[1::2] = True  # 3000 rows: the graph, restricted
    exclude = np.arange(0, len(x), 3)
    _, rows = index.search(queries, 10, exclude=exclude, allowed=allowed)
    assert (rows >= 0).all() and (rows % 2 == 1).all() and not np.isin(rows, exclude).any()
    truth = brute_force(x, queries, 10, allowed & ~np.isin(np.arange(len(x)), exclude))
    assert recall(rows, truth) >= (0.9 if graph else 1.0)
    few = np.zeros(len(x), bool)
    few[[5, 77, 4000]] = True  # fewer than k: exactly those, then padding
    sims, rows = index.search(queries[:2], 5, allowed=few)
    assert set(rows[0, :3]) == {5, 77, 4000} and (rows[:, 3:] == -1).all() and np.isneginf(sims[:, 3:]).all()
    _, rows = index.search(queries[:5], 10, exclude=np.ones(len(x), bool))
    assert (rows == -1).all()  # everything excluded


def test_without_faiss_the_search_is_exact_with_one_warning(tmp_path, monkeypatch, small_threshold):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
    monkeypatch.setattr(feature_index, "_warned", False)
    x = clustered(3000)
    np.save(tmp_path / "features.npy", x)
    index = FeatureIndex.open(tmp_path / "features.npy")
    with pytest.warns(RuntimeWarning, match="faiss is not installed"):
        _, rows = index.search(x[:20], 10)
    assert index.kind == "exact"
    assert_brute_force(x, x[:20], rows, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        index.search(x[:5], 10)  # once per process
    assert not (tmp_path / "features.index").exists()


def test_mean_knn_distance_is_exact_below_the_threshold_and_close_above(monkeypatch):
    from patchcfg.active import neighbours

    x = neighbours.unit_rows(clustered(4000))
    exact = neighbours.mean_knn_distance(x, 20)
    assert np.array_equal(feature_index.mean_knn_distance(x, 20), exact)
    pytest.importorskip("faiss")
    monkeypatch.setattr(feature_index, "EXACT_ROWS", 1000)
    approximate = feature_index.mean_knn_distance(x, 20)
    assert np.all(approximate >= exact - 1e-4)  # never nearer than the nearest
    assert np.abs(approximate - exact).max() < 0.02
