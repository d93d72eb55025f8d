"""probcover (Yehuda et al., NeurIPS 2022) picks as the paper's algorithm written out whole on small
data: the largest δ whose balls are 95% pure w.r.t. k-means pseudo-labels, the δ-graph, the rows
covered by labelled rows removed, then greedy maximum coverage; and the blockwise neighbour searches
it stands on against scipy's distances."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from patchcfg.active import rank
from patchcfg.active.neighbours import (
    GraphTooLarge,
    mean_knn_distance,
    nearest_centres,
    nearest_other_group,
    radius_graph,
    unit_rows,
)
from patchcfg.active.rows import RowFeatures
from patchcfg.active.strategies import Query, get_strategy
from patchcfg.active.strategies.probcover import ProbCover

CLASSES = ["a", "b", "c"]


def probcover_reference(x, candidate, labelled, k, classes, seed, alpha=0.95):
    """The paper's definitions, every pair's distance at once."""
    relevant = np.flatnonzero(candidate | labelled)
    u = unit_rows(x[relevant])  # bitwise as the strategy normalises (k-means follows every last bit)
    with threadpool_limits(1):
        pseudo = KMeans(n_clusters=max(2, classes), random_state=seed, n_init="auto").fit(u).labels_
    d = cdist(u, u)

    def purity(delta):  # the share of rows whose ball {x' : |x - x'| < δ} holds one pseudo-label only
        ball = d < delta
        return np.mean([(pseudo[ball[i]] == pseudo[i]).all() for i in range(len(u))])

    radii = np.concatenate([np.unique(d), [np.inf]])  # purity changes only just above a distance
    delta = max(r for r in radii if purity(r) >= alpha)
    ball = (d < delta) | np.eye(len(u), dtype=bool)
    covered = ball[labelled[relevant]].any(axis=0)
    off = d + np.diag(np.full(len(u), np.inf))
    nearest = off.min(axis=1)
    pickable = candidate[relevant].copy()
    picks, scores = [], []
    while len(picks) < k:
        gain = (ball & ~covered[None, :]).sum(axis=1)
        best = max(np.flatnonzero(pickable), key=lambda i: (gain[i], -nearest[i], -relevant[i]))
        picks.append(int(relevant[best]))
        scores.append(float(gain[best]))
        covered |= ball[best]
        pickable[best] = False
    return picks, scores, delta


def problem(rows=60, dims=5, labelled=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, dims)) + rng.normal(size=dims) * 0.5
    labels = -np.ones((rows, len(CLASSES)))
    done = rng.choice(rows, labelled, replace=False)
    labels[done] = 0
    labels[done, rng.integers(0, len(CLASSES), labelled)] = 1
    candidates = np.ones(rows, bool)
    candidates[done] = False
    candidates[rng.choice(np.flatnonzero(candidates), 4, replace=False)] = False  # neither: never read
    return x, labels, candidates


def select(x, labels, candidates, k, seed, probabilities=None, **features):
    rows = np.flatnonzero(candidates)
    query = Query(label="probcover", cls=None, rows=rows, probabilities=probabilities,
                  features=RowFeatures(x, **features), labels=labels)
    positions, scores, picked_by, pointwise = get_strategy("probcover").select(query, k, np.random.default_rng(seed))
    assert pointwise is None and picked_by == ["probcover"] * k
    return rows[positions].tolist(), scores


def strategy_seed(seed):
    return int(np.random.default_rng(seed).integers(2**31))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("k", [3, 12, 40])  # 40: past full coverage, the picks that cover nothing
def test_picks_as_the_paper_written_out(seed, k, monkeypatch):
    x, labels, candidates = problem(seed=seed)
    labelled = (labels >= 0).any(axis=1) & ~candidates
    picks, scores = select(x, labels, candidates, k, seed)
    want, want_scores, _ = probcover_reference(x, candidates, labelled, k, len(CLASSES), strategy_seed(seed))
    assert picks == want and scores.tolist() == want_scores
    assert len(set(picks)) == k and candidates[picks].all()
    assert scores.sum() <= (candidates | labelled).sum()
    assert (np.diff(scores) <= 0).all()  # greedy gains only shrink


def test_radius_is_the_largest_with_pure_balls():
    x, labels, candidates = problem(seed=4)
    labelled = (labels >= 0).any(axis=1) & ~candidates
    relevant = np.flatnonzero(candidates | labelled)
    u = unit_rows(x[relevant])
    with threadpool_limits(1):
        pseudo = KMeans(n_clusters=3, random_state=0, n_init="auto").fit(u).labels_
    r = np.sqrt(nearest_other_group(u, pseudo, block_rows=7))
    _, _, delta = probcover_reference(x, candidates, labelled, 1, 3, 0)
    # the scan over every radius lands on a quantile of each row's distance to another pseudo-label
    quantile = np.sort(r)[::-1][int(np.ceil(0.95 * len(u))) - 1]
    assert quantile == pytest.approx(delta)
    assert np.mean(r >= quantile) >= 0.95 > np.mean(r > quantile)


def test_labelled_rows_covers_are_skipped():
    rng = np.random.default_rng(5)
    directions = np.eye(5)[:3] * 8
    blob = np.repeat([0, 1, 2], [30, 20, 10])
    x = directions[blob] + rng.normal(size=(60, 5)) * 0.4 + 1.0
    labels = -np.ones((60, 3))
    labels[0, 0] = 1  # one labelled row in the largest blob covers it
    candidates = labels[:, 0] < 0
    picks, scores = select(x, labels, candidates, 3, seed=0)
    assert blob[picks[:2]].tolist() == [1, 2]  # then the next largest blobs
    assert scores[0] >= scores[1] > 0
    without, _ = select(x, -np.ones((60, 3)), np.ones(60, bool), 1, seed=0)
    assert blob[without[0]] == 0


def test_deterministic_for_a_seed_and_blocks_do_not_matter():
    x, labels, candidates = problem(rows=90, seed=6)
    order = np.random.default_rng(0).permutation(len(x))
    base = np.empty_like(x)
    base[order] = x
    picks, scores = select(x, labels, candidates, 10, 7)
    again, again_scores = select(x, labels, candidates, 10, 7)
    assert again == picks and np.array_equal(again_scores, scores)
    mapped, mapped_scores = select(base, labels, candidates, 10, 7, index=order, chunk_rows=7)
    assert mapped == picks and np.array_equal(mapped_scores, scores)


def test_classes_from_labels_or_probabilities():
    x, labels, candidates = problem(seed=8)
    query = Query(label="probcover", cls=None, rows=np.flatnonzero(candidates), probabilities=None,
                  features=RowFeatures(x), labels=labels)
    assert ProbCover.classes(query) == 3
    query.labels, query.probabilities = None, np.full((candidates.sum(), 5), 0.5)
    assert ProbCover.classes(query) == 5
    query.probabilities = np.full((candidates.sum(), 1), 0.5)
    assert ProbCover.classes(query) == 2  # one class: positives and negatives
    query.probabilities = None
    from patchcfg.errors import UserError

    with pytest.raises(UserError, match="number of classes"):
        ProbCover.classes(query)


def test_sampled_and_bounded_at_scale(monkeypatch):
    """A sample of the rows, δ measured on some of them, the graph cut to fit its edges, labelled
    rows outside the sample still covering: every pick a candidate, the same for a seed."""
    monkeypatch.setattr(ProbCover, "max_rows", 150)
    monkeypatch.setattr(ProbCover, "purity_rows", 40)
    x, labels, candidates = problem(rows=400, dims=6, labelled=40, seed=9)
    x = x.astype(np.float32)
    picks, scores = select(x, labels, candidates, 12, 1, chunk_rows=64)
    assert len(set(picks)) == 12 and candidates[picks].all() and (scores >= 0).all()
    assert select(x, labels, candidates, 12, 1, chunk_rows=64)[0] == picks
    monkeypatch.setattr(ProbCover, "max_edges", 200)  # the 150 rows graph holds 268: built on fewer rows
    small, small_scores = select(x, labels, candidates, 12, 1, chunk_rows=64)
    assert len(set(small)) == 12 and candidates[small].all() and small_scores.sum() < 150


def test_through_rank_with_explore():
    x, labels, candidates = problem(seed=10)
    table = rank("probcover", probabilities=None, features=x, classes=CLASSES, candidates=candidates, n=8,
                 labels=labels, explore=0.25, seed=3)
    assert len(table) == 8 and table["row"].is_unique and candidates[table["row"]].all()
    mine = table[table["picked_by"] == "probcover"]
    assert len(mine) == 6 and table["picked_by"].eq("explore").sum() == 2
    assert table.loc[table["picked_by"] == "explore", "score"].isna().all()
    labelled = (labels >= 0).any(axis=1) & ~candidates
    want, want_scores, _ = probcover_reference(x, candidates, labelled, 6, len(CLASSES),
                                               int(np.random.default_rng([3, 0]).integers(2**31)))
    assert mine["row"].tolist() == want and mine["score"].tolist() == want_scores


# --- the blockwise searches -------------------------------------------------------------------------

@pytest.mark.parametrize("block", [1, 3, 7, 2048])
def test_neighbour_searches_in_blocks(block):
    rng = np.random.default_rng(11)
    x = unit_rows(rng.normal(size=(40, 5)))
    d2 = cdist(x, x, "sqeuclidean")
    groups = rng.integers(0, 3, 40)
    other = np.where(groups[:, None] != groups[None, :], d2, np.inf).min(axis=1)
    assert nearest_other_group(x, groups, block_rows=block) == pytest.approx(other)
    assert nearest_other_group(x, groups, 13, block_rows=block) == pytest.approx(other[:13])
    radius = np.quantile(d2, 0.2)
    indptr, indices, nearest = radius_graph(x, radius, block_rows=block)
    got = np.zeros((40, 40), bool)
    got[np.repeat(np.arange(40), np.diff(indptr)), indices] = True
    assert (got == ((d2 < radius) | np.eye(40, dtype=bool))).all() and (got == got.T).all()
    assert nearest == pytest.approx((d2 + np.diag(np.full(40, np.inf))).min(axis=1))
    with pytest.raises(GraphTooLarge):
        radius_graph(x, radius, max_edges=int(got.sum()) - 1, block_rows=block)
    knn = np.sort(np.sqrt(d2) + np.diag(np.full(40, np.inf)), axis=1)[:, :4].mean(axis=1)
    assert mean_knn_distance(x, 4, block_rows=block) == pytest.approx(knn)
    centres = x[:6]
    raw = x * rng.uniform(0.5, 2.0, size=(40, 1))  # compared as unit rows
    assert (nearest_centres(raw, centres, unit=True) == cdist(x, centres, "sqeuclidean").argmin(axis=1)).all()
