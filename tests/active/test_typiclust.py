"""typiclust (Hacohen et al., ICML 2022) picks as the paper's algorithm written out whole on small
data: k-means into (labelled + picks) clusters, clusters without labelled rows first and largest
first, in each the candidate with the smallest mean distance to its K nearest candidates."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from patchcfg.active import rank
from patchcfg.active.neighbours import unit_rows
from patchcfg.active.rows import RowFeatures
from patchcfg.active.strategies import Query, get_strategy
from patchcfg.active.strategies.typiclust import TypiClust

CLASSES = ["a", "b", "c"]


def unit(x):
    """The rows L2-normalised, bitwise as the strategy does (k-means follows every last bit)."""
    return unit_rows(x)


def typiclust_reference(x, candidate, labelled, k, seed):
    """The paper's selection (its code, deep-al/pycls/al/typiclust.py), with Euclidean distances as
    the paper defines typicality, and the small clusters' turn once the large ones have no candidates."""
    relevant = np.flatnonzero(candidate | labelled)
    u = unit(x)[relevant]
    clusters = min(int(labelled.sum()) + k, 500, len(relevant))
    with threadpool_limits(1):
        centres = KMeans(n_clusters=clusters, random_state=seed, n_init="auto").fit(u).cluster_centers_
    cluster = cdist(u, centres, "sqeuclidean").argmin(axis=1)
    sizes = np.bincount(cluster, minlength=clusters)
    existing = np.bincount(cluster[labelled[relevant]], minlength=clusters)
    order = sorted(range(clusters), key=lambda c: (existing[c], -sizes[c], c))
    large = [c for c in order if sizes[c] > 5]
    small = [c for c in order if sizes[c] <= 5]
    left = {c: [int(r) for r in relevant[(cluster == c) & candidate[relevant]]] for c in range(clusters)}
    picks, scores, turn = [], [], 0
    while len(picks) < k:
        if not any(left[c] for c in large):
            large, small, turn = small, [], 0
            continue
        c = large[turn % len(large)]
        turn += 1
        if not left[c]:
            continue
        pool = left[c]
        neighbours = min(20, len(pool) // 2)
        if neighbours == 0:
            best, score = 0, np.nan
        else:
            d = cdist(unit(x)[pool], unit(x)[pool])
            np.fill_diagonal(d, np.inf)
            typicality = 1 / (np.sort(d, axis=1)[:, :neighbours].mean(axis=1) + 1e-5)
            best, score = int(np.argmax(typicality)), float(typicality.max())
        picks.append(pool[best])
        scores.append(score)
        left[c].remove(pool[best])
    return picks, scores


def problem(rows=60, dims=5, labelled=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, dims)) + rng.normal(size=dims)
    labels = -np.ones((rows, len(CLASSES)))
    done = rng.choice(rows, labelled, replace=False)
    labels[done] = 0
    labels[done, rng.integers(0, len(CLASSES), labelled)] = 1
    candidates = np.ones(rows, bool)
    candidates[done] = False
    candidates[rng.choice(np.flatnonzero(candidates), 4, replace=False)] = False  # neither: never read
    return x, labels, candidates


def select(x, labels, candidates, k, seed, **features):
    rows = np.flatnonzero(candidates)
    query = Query(label="typiclust", cls=None, rows=rows, probabilities=None,
                  features=RowFeatures(x, **features), labels=labels)
    positions, scores, picked_by, pointwise = get_strategy("typiclust").select(query, k, np.random.default_rng(seed))
    assert pointwise is None and picked_by == ["typiclust"] * k
    return rows[positions].tolist(), scores


def strategy_seed(seed):
    return int(np.random.default_rng(seed).integers(2**31))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [4, 9, 25])  # 25: more picks than large clusters, the turns come round
def test_picks_as_the_paper_written_out(seed, k):
    x, labels, candidates = problem(seed=seed)
    picks, scores = select(x, labels, candidates, k, seed)
    labelled = (labels >= 0).any(axis=1) & ~candidates
    want, want_scores = typiclust_reference(x, candidates, labelled, k, strategy_seed(seed))
    assert picks == want
    np.testing.assert_allclose(scores, want_scores, rtol=1e-9)
    assert len(set(picks)) == k and candidates[picks].all()


def test_clusters_without_labelled_rows_first_largest_first():
    rng = np.random.default_rng(3)
    sizes = [14, 12, 10, 9, 8, 7]
    centres = np.eye(6)[:, :5] * 6 + np.eye(6)[:, 5:].repeat(5, axis=1) * -6  # six directions apart
    blob = np.repeat(np.arange(6), sizes)
    x = centres[blob] + rng.normal(size=(len(blob), 5)) * 0.3
    labels = -np.ones((len(blob), 3))
    labels[[0, 14], 0] = 1  # one labelled row in each of the two largest blobs
    candidates = labels[:, 0] < 0
    picks, scores = select(x, labels, candidates, 4, seed=0)  # 2 labelled + 4 picks = 6 clusters
    assert blob[picks].tolist() == [2, 3, 4, 5]  # the unlabelled blobs, largest first
    centre_of = [x[blob == b].mean(axis=0) for b in range(6)]
    for row, b in zip(picks, blob[picks], strict=True):  # each blob's most typical row: near its middle
        members = np.flatnonzero(blob == b)
        distance = np.linalg.norm(unit(x[members]) - unit(centre_of[b][None]), axis=1)
        assert distance[members == row][0] <= np.sort(distance)[len(members) // 2]
    assert (np.asarray(scores) > 0).all()


def test_deterministic_for_a_seed_and_blocks_do_not_matter():
    x, labels, candidates = problem(rows=120, seed=4)
    order = np.random.default_rng(0).permutation(len(x))
    base = np.empty_like(x)
    base[order] = x  # row i of the table is base[order[i]]
    picks, scores = select(x, labels, candidates, 10, 7)
    again, again_scores = select(x, labels, candidates, 10, 7)
    assert again == picks and np.array_equal(again_scores, scores)
    mapped, mapped_scores = select(base, labels, candidates, 10, 7, index=order, chunk_rows=7)
    assert mapped == picks
    np.testing.assert_allclose(mapped_scores, scores, rtol=1e-12)
    assert select(x, labels, candidates, 10, 8)[0] != picks


def test_at_scale_samples_stay_within_the_candidates(monkeypatch):
    """MiniBatchKMeans on a sample of the rows, every row assigned, large clusters sampled."""
    monkeypatch.setattr(TypiClust, "full_kmeans_clusters", 2)
    monkeypatch.setattr(TypiClust, "fit_rows", 150)
    monkeypatch.setattr(TypiClust, "max_cluster_rows", 12)
    x, labels, candidates = problem(rows=400, dims=6, labelled=3, seed=5)
    picks, scores = select(x.astype(np.float32), labels, candidates, 12, 1, chunk_rows=64)
    assert len(set(picks)) == 12 and candidates[picks].all()
    assert np.isfinite(scores).all()
    assert select(x.astype(np.float32), labels, candidates, 12, 1, chunk_rows=64)[0] == picks


def test_through_rank_with_explore():
    x, labels, candidates = problem(seed=6)
    table = rank("typiclust", probabilities=None, features=x, classes=CLASSES, candidates=candidates, n=8,
                 labels=labels, explore=0.25, seed=3)
    assert len(table) == 8 and table["row"].is_unique and candidates[table["row"]].all()
    mine = table[table["picked_by"] == "typiclust"]
    assert len(mine) == 6 and table["picked_by"].eq("explore").sum() == 2
    assert table.loc[table["picked_by"] == "explore", "score"].isna().all()
    labelled = (labels >= 0).any(axis=1) & ~candidates
    want, want_scores = typiclust_reference(x, candidates, labelled, 6,
                                            int(np.random.default_rng([3, 0]).integers(2**31)))
    assert mine["row"].tolist() == want
    np.testing.assert_allclose(mine["score"], want_scores, rtol=1e-9)
    again = rank("typiclust", probabilities=None, features=x, classes=CLASSES, candidates=candidates, n=8,
                 labels=labels, explore=0.25, seed=3)
    assert again.equals(table)


def test_without_labels_every_candidate_may_be_clustered():
    x, _, candidates = problem(seed=7)
    table = rank("typiclust", probabilities=None, features=x, classes=CLASSES, candidates=candidates, n=5,
                 labels=None, seed=0)
    assert len(table) == 5 and candidates[table["row"]].all()
    want, _ = typiclust_reference(x, candidates, np.zeros(len(x), bool), 5,
                                  int(np.random.default_rng([0, 0]).integers(2**31)))
    assert table["row"].tolist() == want
