"""The samplers read features block by block: tiny blocks, memory maps and indexed rows give the
same picks as the plain algorithms written out whole (references below, small data only)."""

import warnings

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from patchcfg.active import rank
from patchcfg.active.batch import BadgeSampler, KCenterGreedy, min_sq_distances, nearest_positive_similarity
from patchcfg.active.quick_head import QuickHead, quick_head_probabilities
from patchcfg.active.rows import RowFeatures

CHUNKS = (1, 3, 7, None)  # None: the default block size (every row in one block here)


def data(rows=60, dims=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, dims)) * rng.uniform(0.5, 3, size=dims) + rng.normal(size=dims)


# --- references: the algorithms without blocks ----------------------------------------------------

def kcenter_reference(x, labelled, n, first=None):
    nearest = cdist(x, labelled, "sqeuclidean").min(axis=1) if labelled is not None else np.full(len(x), np.inf)
    picks = []
    if labelled is None:
        picks.append(first)
        nearest = np.minimum(nearest, cdist(x, x[[first]], "sqeuclidean")[:, 0])
        nearest[first] = -1
    while len(picks) < n:
        current = int(np.argmax(nearest))
        picks.append(current)
        nearest = np.minimum(nearest, cdist(x, x[[current]], "sqeuclidean")[:, 0])
        nearest[picks] = -1
    return picks


def badge_embedding(p, h):
    """The gradient embeddings, built whole: rows x (classes * dims)."""
    return ((p - (p > 0.5))[:, :, None] * h[:, None, :]).reshape(len(p), -1)


def quick_head_reference(x, labels, train):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    z = StandardScaler().fit_transform(x)
    out = np.empty(labels.shape)
    for c in range(labels.shape[1]):
        known = train & (labels[:, c] >= 0)
        target = (labels[known, c] > 0.5).astype(int)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = LogisticRegression(max_iter=2000, random_state=0).fit(z[known], target)
        out[:, c] = model.predict_proba(z)[:, 1]
    return out


# --- block by block = whole -------------------------------------------------------------------------

@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("refresh", [1, 4, 64])  # rows brought up to date per try (64: every row here)
def test_kcenter_in_blocks_and_lazily_picks_as_the_whole(chunk, refresh, monkeypatch):
    monkeypatch.setattr(KCenterGreedy, "first_refresh", refresh)
    monkeypatch.setattr(KCenterGreedy, "first_labelled", {1: 1, 4: 3, 64: 32}[refresh])  # the rest: lazily
    monkeypatch.setattr(KCenterGreedy, "first_shortlist", {1: 1, 4: 5, 64: 64}[refresh])  # widened as needed
    x = data()
    labelled = data(8, seed=1)
    got = KCenterGreedy(25, chunk_rows=chunk).fit(x, labelled)
    assert got.picks_.tolist() == kcenter_reference(x, labelled, 25)
    assert got.scores_[0] == pytest.approx(np.sqrt(cdist(x, labelled, "sqeuclidean").min(axis=1).max()))
    first = int(np.random.default_rng(5).integers(len(x)))
    assert KCenterGreedy(25, seed=5, chunk_rows=chunk).fit(x).picks_.tolist() == kcenter_reference(x, None, 25, first)
    ties = np.repeat(np.round(data(10, seed=2) * 4), 3, axis=0)  # thrice each, exact: ties, the lowest row wins
    assert KCenterGreedy(12, seed=1, chunk_rows=chunk).fit(ties).picks_.tolist() == kcenter_reference(
        ties, None, 12, int(np.random.default_rng(1).integers(30)))


def test_badge_picks_do_not_depend_on_blocks_and_score_their_distance():
    rng = np.random.default_rng(2)
    h, p = data(50), rng.uniform(size=(50, 3))
    picks = {chunk: BadgeSampler(15, seed=3, chunk_rows=chunk).fit(p, h) for chunk in CHUNKS}
    assert len({tuple(s.picks_.tolist()) for s in picks.values()}) == 1
    got, g = picks[None], badge_embedding(p, h)
    assert len(set(got.picks_.tolist())) == 15 and got.picks_[0] == np.argmax((g * g).sum(axis=1))
    for j in range(1, 15):  # each score: the squared distance to the nearest earlier pick
        assert got.scores_[j] == pytest.approx(cdist(g[[got.picks_[j]]], g[got.picks_[:j]], "sqeuclidean").min())
    mapped = RowFeatures(h[::-1].copy(), index=np.arange(49, -1, -1), chunk_rows=4)
    assert BadgeSampler(15, seed=3).fit(p, mapped).picks_.tolist() == got.picks_.tolist()


@pytest.mark.parametrize("rejections", [64, 0])  # 0: every draw brings every row up to date (eager)
def test_badge_draws_as_kmeans_plus_plus(rejections, monkeypatch):
    """The third pick, given the first two, is drawn with probability ∝ its squared distance to the
    nearer of them (the bounds of rows near the second pick are stale when it is drawn)."""
    monkeypatch.setattr(BadgeSampler, "max_rejections", rejections)
    rng = np.random.default_rng(4)
    h, p = data(8, 3, seed=5), rng.uniform(size=(8, 2))
    g = badge_embedding(p, h)
    third: dict[tuple, list] = {}
    for seed in range(3000):
        picks = BadgeSampler(3, seed=seed).fit(p, h).picks_.tolist()
        third.setdefault(tuple(picks[:2]), []).append(picks[2])
    pair, drawn = max(third.items(), key=lambda item: len(item[1]))
    assert len(drawn) > 300
    d2 = cdist(g, g[list(pair)], "sqeuclidean").min(axis=1)
    frequencies = np.bincount(drawn, minlength=8) / len(drawn)
    assert frequencies == pytest.approx(d2 / d2.sum(), abs=4 * np.sqrt(0.25 / len(drawn)))


@pytest.mark.parametrize("chunk", CHUNKS)
def test_distances_and_similarities_in_blocks(chunk):
    x, y = data(40), data(9, seed=4)
    assert min_sq_distances(x, y, chunk) == pytest.approx(cdist(x, y, "sqeuclidean").min(axis=1))
    features = RowFeatures(np.concatenate([x, y]), chunk_rows=chunk)
    theirs = features.select(np.arange(40, 49))
    assert min_sq_distances(features.select(np.arange(40)), theirs) == pytest.approx(
        cdist(x, y, "sqeuclidean").min(axis=1))
    cosine = 1 - cdist(x, y, "cosine").min(axis=1)
    assert nearest_positive_similarity(x, y, chunk_rows=chunk) == pytest.approx(cosine)
    assert nearest_positive_similarity(features, theirs, rows=np.arange(40)) == pytest.approx(cosine)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_quick_head_in_blocks_scores_as_the_whole(chunk):
    x = data(120, 5) + 40.0  # far from 0: the blockwise statistics must still standardise exactly
    rng = np.random.default_rng(0)
    labels = -np.ones((120, 2))
    labels[:60, 0] = x[:60, 0] > 40
    labels[:40, 1] = rng.uniform(size=40) > 0.5
    train = np.ones(120, bool)
    train[50:55] = False
    want = quick_head_reference(x, labels, train)
    assert quick_head_probabilities(x, labels, train, chunk_rows=chunk) == pytest.approx(want, abs=1e-9)
    p32 = quick_head_probabilities(x.astype(np.float32), labels, train, chunk_rows=chunk)
    assert p32 == pytest.approx(want, abs=1e-4)  # float32 features score in float32


def test_quick_head_scores_only_the_rows_asked_and_reads_through_an_index():
    x = data(30, 4)
    labels = -np.ones((30, 1))
    labels[:20, 0] = x[:20, 0] > x[:, 0].mean()
    order = np.random.default_rng(1).permutation(30)
    base = np.empty_like(x)
    base[order] = x                         # row i of the table is base[order[i]]
    features = RowFeatures(base, index=order, chunk_rows=4)
    want = quick_head_probabilities(x, labels, np.ones(30, bool))
    assert quick_head_probabilities(features, labels, np.ones(30, bool)) == pytest.approx(want, abs=1e-9)
    some = np.zeros(30, bool)
    some[:25] = True
    got = quick_head_probabilities(features, labels, np.ones(30, bool) & some, rows=some)
    assert np.isnan(got[25:]).all() and np.isfinite(got[:25]).all()
    with pytest.raises(ValueError, match="training row 25"):
        quick_head_probabilities(features, -np.zeros((30, 1)), np.ones(30, bool), rows=some)


@pytest.mark.parametrize("exclusive", [False, True])
def test_quick_head_scores_a_few_rows_as_it_scores_every_row(exclusive):
    x = (data(40, 5) + 10.0).astype(np.float32)
    labels = -np.ones((40, 3))
    labels[:30] = np.eye(3)[np.argmax(x[:30, :3], axis=1)]
    labels[:30, 2] = 0  # one class never present: its prior, not a fit
    scored = np.ones(40, bool)
    scored[35:] = False
    head = QuickHead.fit(RowFeatures(x, chunk_rows=8), labels, scored, exclusive=exclusive, rows=scored)
    every = head.probabilities()
    few = [33, 2, 17]
    got = head.probabilities(few)
    assert got[few] == pytest.approx(every[few], abs=1e-6)
    assert np.isnan(np.delete(got, few, axis=0)).all()
    assert every[:35] == pytest.approx(quick_head_probabilities(x, labels, scored, exclusive=exclusive,
                                                                rows=scored)[:35], abs=1e-6)
    with pytest.raises(ValueError, match="row 36"):
        head.probabilities([1, 36])


# --- the ranking over a memory map seen through an index ----------------------------------------------

@pytest.mark.parametrize("strategy", ["diversity", "badge", "guide:c1", "entropy"])
def test_rank_on_a_memory_map_through_an_index_equals_the_array(tmp_path, strategy):
    x = data(80, 5, seed=7)
    rng = np.random.default_rng(8)
    p = rng.uniform(size=(80, 2))
    labels = -np.ones((80, 2))
    labels[:15] = rng.uniform(size=(15, 2)) > 0.5
    candidates = np.ones(80, bool)
    candidates[:15] = False
    order = rng.permutation(80)
    stored = np.empty((90, 5), np.float64)  # ten extra cached rows the table does not have
    stored[order] = x
    stored[80:] = np.nan
    np.save(tmp_path / "f.npy", stored)
    mapped = RowFeatures(np.load(tmp_path / "f.npy", mmap_mode="r"), index=order, chunk_rows=6)
    kw = dict(probabilities=p, classes=["c0", "c1"], candidates=candidates, n=10, labels=labels, seed=3,
              explore=0.2)
    want = rank(strategy, features=x, **kw)
    got = rank(strategy, features=mapped, **kw)
    assert got["row"].tolist() == want["row"].tolist()
    assert got["score"].to_numpy() == pytest.approx(want["score"].to_numpy(), nan_ok=True)


def test_rows_without_features_may_not_be_read():
    features = RowFeatures(np.ones((3, 2)), index=[0, -1, 2])
    assert features.take([2, 0]).tolist() == [[1, 1], [1, 1]]
    with pytest.raises(ValueError, match="row 1 has no cached features"):
        features.take([0, 1])
