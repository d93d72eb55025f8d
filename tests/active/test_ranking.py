"""Active learning strategies on hand-made probabilities, features and label tables."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from patchcfg.active import candidate_mask, parse_strategy, quick_head_probabilities, rank
from patchcfg.active import scores as S
from patchcfg.errors import UserError
from patchcfg.label_table import from_dataframe

TWO = ["cat", "dog"]
DIGITS = ["zero", "one", "two", "three"]


def ranked(strategy, p=None, x=None, classes=TWO, n=None, **kw):
    rows = len(p) if p is not None else len(x) if x is not None else 5
    kw.setdefault("candidates", np.ones(rows, bool))
    return rank(strategy, probabilities=None if p is None else np.asarray(p, float),
                features=None if x is None else np.asarray(x, float), classes=classes,
                n=rows if n is None else n, **kw)


def order(strategy, p, **kw):
    return ranked(strategy, p, **kw)["row"].tolist()


# --- uncertainty scores: two classes and many, sigmoid and softmax --------------------------------

def test_two_class_margin_is_not_inverted():
    """Picsellia's two-class margin puts confident rows first; (0.5, 0.5) must come first, (0.99, 0.01) last."""
    p = [[0.99, 0.01], [0.5, 0.5], [0.7, 0.3], [0.2, 0.8]]
    for exclusive in (True, False):
        got = ranked("margin", p, exclusive=exclusive)
        assert got["row"].tolist() == [1, 2, 3, 0]
        assert got["score"].tolist() == pytest.approx([1.0, 0.6, 0.4, 0.02])   # 1 - |p0 - p1|
    assert S.margin(np.array(p), exclusive=True) == pytest.approx([0.02, 1.0, 0.6, 0.4])


def test_softmax_scores_for_many_classes():
    p = np.array([[0.40, 0.35, 0.15, 0.10],    # close top two, high top1
                  [0.25, 0.25, 0.25, 0.25],    # uniform
                  [0.90, 0.05, 0.03, 0.02],    # confident
                  [0.30, 0.10, 0.30, 0.30]])   # three-way tie, low top1
    assert S.margin(p, True) == pytest.approx([1 - 0.05, 1.0, 1 - 0.85, 1.0])
    assert S.least_confidence(p, True) == pytest.approx([0.60, 0.75, 0.10, 0.70])
    ent = S.entropy(p, True)
    assert ent[1] == pytest.approx(1.0) and ent[2] < ent[0] < ent[3] < ent[1]
    assert order("least_confidence", p, classes=DIGITS, exclusive=True) == [1, 3, 0, 2]
    assert order("margin", p, classes=DIGITS, exclusive=True) == [1, 3, 0, 2]
    assert order("entropy", p, classes=DIGITS, exclusive=True) == [1, 3, 0, 2]


def test_sigmoid_scores_for_two_and_many_classes():
    p = np.array([[0.5, 0.99], [0.9, 0.9], [0.6, 0.4], [0.01, 0.02]])
    # margin = 1 - min_c |2p - 1|: the most uncertain class decides
    assert S.margin(p) == pytest.approx([1.0, 0.2, 0.8, 1 - 0.96])
    # least confidence = 1 - P(most likely multi-hot vector) = 1 - prod max(p, 1 - p)
    assert S.least_confidence(p) == pytest.approx([1 - 0.5 * 0.99, 1 - 0.81, 1 - 0.36, 1 - 0.99 * 0.98])
    # patchwork's max entropy: max over classes of binary entropy (bits)
    assert S.entropy(p) == pytest.approx([1.0, S.binary_entropy(0.9), S.binary_entropy(0.6),
                                          S.binary_entropy(0.02)])
    assert order("margin", p) == [0, 2, 1, 3]
    assert order("entropy", p) == [0, 2, 1, 3]
    assert order("least_confidence", p) == [2, 0, 1, 3]
    many = np.array([[0.95, 0.05, 0.50, 0.10], [0.30, 0.70, 0.80, 0.20], [0.99, 0.01, 0.02, 0.97]])
    assert S.margin(many) == pytest.approx([1.0, 0.6, 1 - 0.94])
    assert order("margin", many, classes=DIGITS) == [0, 1, 2]
    assert order("least_confidence", many, classes=DIGITS) == [1, 0, 2]


def test_maxent_ranks_one_class_closest_to_half():
    p = np.array([[0.5, 0.9], [0.9, 0.5], [0.7, 0.45], [0.2, 0.99]])
    got = ranked("maxent:dog", p)
    assert got["row"].tolist() == [1, 2, 0, 3]
    assert got["score"].iloc[0] == pytest.approx(1.0)
    assert order("maxent:cat", p) == [0, 2, 3, 1]


def test_binary_entropy_values():
    assert S.binary_entropy(np.array([0.0, 0.5, 1.0, 0.25])) == pytest.approx([0, 1, 0, 0.811278], abs=1e-6)


# --- hard-negative mining ------------------------------------------------------------------------------

def test_high_and_low_top():
    p = np.array([[0.2, 0.1], [0.9, 0.3], [0.5, 0.8], [0.05, 0.6]])
    high = ranked("high:cat", p, n=2)
    assert high["row"].tolist() == [1, 2] and high["score"].tolist() == pytest.approx([0.9, 0.5])
    low = ranked("low:dog", p, n=3)
    assert low["row"].tolist() == [0, 1, 3] and low["score"].tolist() == pytest.approx([0.9, 0.7, 0.4])
    assert set(high["picked_by"]) == {"high:cat"}


@pytest.mark.parametrize("strategy, weight", [("high:cat", lambda p: p ** 4), ("low:cat", lambda p: (1 - p) ** 4)])
def test_weighted_sampling_frequencies_follow_fourth_power(strategy, weight):
    p = np.array([0.2, 0.5, 0.8, 1.0, 0.0])
    probs = np.stack([p, 1 - p], axis=1)
    draws = 3000
    counts = np.zeros(len(p))
    for seed in range(draws):
        counts[ranked(strategy, probs, n=1, sampling="weighted", seed=seed)["row"].iloc[0]] += 1
    expected = weight(p) / weight(p).sum()
    assert counts / draws == pytest.approx(expected, abs=0.03)


def test_weighted_sampling_returns_distinct_rows_even_with_zero_weights():
    p = np.array([[1.0, 0], [0.0, 1], [0.0, 1], [0.5, 0.5]])
    got = ranked("high:cat", p, n=4, sampling="weighted", seed=3)
    assert sorted(got["row"]) == [0, 1, 2, 3]
    assert got["row"].tolist()[2:] == [1, 2]  # zero weight: last, in row order


# --- guide -------------------------------------------------------------------------------------------

def planted(seed=0):
    """200 rows in 16-d; class 'dog' is rare: 3 known positives and 5 unknown ones along one direction."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, 16))
    direction = np.zeros(16)
    direction[0] = 8.0
    known, hidden = [10, 20, 30], [50, 60, 70, 80, 90]
    x[known + hidden] = direction + rng.normal(scale=0.5, size=(8, 16))
    labels = -np.ones((200, 2))
    labels[:100] = [1, 0]          # 100 labelled negatives of dog
    labels[known] = [0, 1]
    labels[hidden] = -1
    candidates = labels[:, 1] < 0
    return x, labels, candidates, hidden


def test_guide_finds_planted_positives_from_features_alone():
    x, labels, candidates, hidden = planted()
    got = ranked("guide:dog", None, x, n=5, labels=labels, candidates=candidates)
    assert sorted(got["row"]) == hidden
    assert set(got["picked_by"]) == {"guide:dog"}


def test_guide_with_probabilities_and_features_and_mix():
    x, labels, candidates, hidden = planted()
    rng = np.random.default_rng(1)
    p = np.stack([rng.uniform(0.6, 1, 200), rng.uniform(0.0, 0.3, 200)], axis=1)
    p[hidden, 1] = rng.uniform(0.5, 0.9, 5)
    p[[150, 151], 0] = 0.5                # the most uncertain rows
    probability_only = ranked("guide:dog", p, None, n=5, labels=labels, candidates=candidates)
    assert sorted(probability_only["row"]) == hidden
    both = ranked("guide:dog", p, x, n=5, labels=labels, candidates=candidates)
    assert sorted(both["row"]) == hidden
    assert both["score"].is_monotonic_decreasing
    mixed = ranked("guide:dog", p, x, n=7, labels=labels, candidates=candidates, mix=2 / 7)
    assert sorted(mixed.loc[mixed["picked_by"] == "guide:dog", "row"]) == hidden
    assert sorted(mixed.loc[mixed["picked_by"] == "entropy", "row"]) == [150, 151]
    assert mixed["picked_by"].iloc[0] == "guide:dog"   # entropy picks are spread, not first


def test_guide_without_anything_to_search_with():
    x, labels, candidates, _ = planted()
    labels[:, 1] = np.where(labels[:, 1] == 1, 0, labels[:, 1])
    with pytest.raises(UserError, match="no known positives of 'dog'"):
        ranked("guide:dog", None, x, n=5, labels=labels, candidates=candidates)
    with pytest.raises(UserError, match="mix > 0 needs probabilities"):
        ranked("guide:dog", None, x, n=5, labels=labels, candidates=candidates, mix=0.5)


# --- badge and diversity ------------------------------------------------------------------------------

def clusters(seed=0, per=30):
    rng = np.random.default_rng(seed)
    centres = np.array([[10.0, 0, 0], [0, 10.0, 0], [0, 0, 10.0]])
    x = np.concatenate([c + rng.normal(scale=0.05, size=(per, 3)) for c in centres])
    return x, np.repeat(np.arange(3), per)


@pytest.mark.parametrize("exclusive", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_badge_picks_one_per_cluster(exclusive, seed):
    x, which = clusters(seed)
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.55, 0.65, size=(len(x), 2))   # uncertain, same hallucinated label everywhere
    if exclusive:
        p[:, 1] = 1 - p[:, 0]
    got = ranked("badge", p, x, n=3, exclusive=exclusive, seed=seed)
    assert sorted(which[got["row"]]) == [0, 1, 2]
    assert set(got["picked_by"]) == {"badge"}


@pytest.mark.parametrize("seed", range(5))
def test_badge_starts_from_the_most_uncertain_row(seed):
    """Confident rows have gradient embeddings near 0: one point for k-means++, picked at most once."""
    x, which = clusters()
    p = np.full((len(x), 2), 0.999)
    p[:, 1] = 0.001
    uncertain = [5, 40, 75]
    p[uncertain] = [0.45, 0.55]
    p[40] = [0.5, 0.5]
    got = ranked("badge", p, x, n=4, exclusive=True, seed=seed)
    assert got["row"].iloc[0] == 40
    assert got["score"].iloc[0] == pytest.approx((0.5 ** 2 * 2) * (x[40] ** 2).sum())
    assert set(uncertain) <= set(got["row"])


def test_badge_many_classes_multi_hot():
    """Three picks land in three clusters as often as k-means++ on the multi-hot gradient
    embeddings says they should (worked out exactly here; about one seed in four)."""
    x, which = clusters(per=20)
    p = np.random.default_rng(0).uniform(0.2, 0.8, size=(len(x), 4))
    a = p - (p > 0.5)
    g = (a[:, :, None] * x[:, None, :]).reshape(len(x), -1)
    d2 = ((g[:, None, :] - g[None, :, :]) ** 2).sum(axis=2)
    first = int(np.argmax((g * g).sum(axis=1)))
    second = d2[first] / d2[first].sum()
    expected = 0.0
    for j in np.flatnonzero(second):
        third = np.minimum(d2[first], d2[j])
        spread = (which != which[first]) & (which != which[j]) & (which[j] != which[first])
        expected += second[j] * third[spread].sum() / third.sum()
    seeds = 300
    got = np.mean([sorted(which[ranked("badge", p, x, classes=DIGITS, n=3, seed=s)["row"]]) == [0, 1, 2]
                   for s in range(seeds)])
    assert got == pytest.approx(expected, abs=4 * np.sqrt(expected * (1 - expected) / seeds))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_diversity_picks_one_per_cluster(seed):
    x, which = clusters(seed)
    got = ranked("diversity", None, x, n=3, seed=seed)
    assert sorted(which[got["row"]]) == [0, 1, 2]
    assert np.isnan(got["score"].iloc[0]) and (got["score"].iloc[1:] > 5).all()


def test_diversity_starts_from_labelled_rows():
    x, which = clusters()
    labels = -np.ones((len(x), 2))
    labels[which == 0] = [1, 0]
    candidates = which != 0
    got = ranked("diversity", None, x, n=2, labels=labels, candidates=candidates)
    assert sorted(which[got["row"]]) == [1, 2]
    third = ranked("diversity", None, x, n=3, labels=labels, candidates=candidates)
    assert third["score"].iloc[2] < 1.0   # once every cluster is covered, picks are close


# --- random and explore --------------------------------------------------------------------------------

def test_random_is_seeded_and_distinct():
    p = np.full((50, 2), 0.5)
    a, b = ranked("random", p, n=20, seed=4), ranked("random", p, n=20, seed=4)
    assert a.equals(b) and a["row"].is_unique
    assert not a["row"].equals(ranked("random", p, n=20, seed=5)["row"])
    assert ranked("random", None, np.zeros((50, 3)), n=5)["row"].is_unique  # needs no inputs


@pytest.mark.parametrize("n, explore, n_explore", [(10, 0.3, 3), (10, 0.25, 3), (10, 0.0, 0), (10, 1.0, 10),
                                                   (7, 0.5, 4), (1, 0.4, 0)])
def test_explore_mixes_exact_counts_without_duplicates(n, explore, n_explore):
    p = np.linspace(0.01, 0.99, 60)[:, None] * np.ones((1, 2))
    candidates = np.arange(60) % 3 != 0
    got = ranked("entropy", p, n=n, explore=explore, candidates=candidates, seed=2)
    assert len(got) == n and got["row"].is_unique
    assert got["rank"].tolist() == list(range(1, n + 1))
    assert candidates[got["row"]].all()
    assert (got["picked_by"] == "explore").sum() == n_explore
    if n > n_explore:
        top = ranked("entropy", p, n=n - n_explore, candidates=candidates)
        assert sorted(got.loc[got["picked_by"] == "entropy", "row"]) == sorted(top["row"])
    assert got.loc[got["picked_by"] == "explore", "score"].notna().all()   # entropy scores every row


def test_explore_is_spread_and_fewer_candidates_return_all():
    p = np.random.default_rng(0).uniform(size=(40, 2))
    got = ranked("margin", p, n=10, explore=0.2)
    assert [i for i, by in enumerate(got["picked_by"]) if by == "explore"] == [3, 7]
    few = np.zeros(40, bool)
    few[[3, 9, 12]] = True
    for strategy, x in (("margin", None), ("badge", np.eye(40)), ("diversity", np.eye(40))):
        got = ranked(strategy, p, x, n=10, explore=0.5, candidates=few)
        assert sorted(got["row"]) == [3, 9, 12]
    assert ranked("margin", p, n=5, candidates=np.zeros(40, bool)).columns.tolist() == ["row", "rank", "score",
                                                                                         "picked_by"]
    x, _ = clusters()
    got = ranked("diversity", None, x, n=10, explore=0.3)
    assert got["row"].is_unique and got.loc[got["picked_by"] == "explore", "score"].isna().all()


# --- subsets ------------------------------------------------------------------------------------------

def subsets_table(validation_row_labels=("", "")):
    """Eight rows: unlabelled, partial, labelled, excluded and validation ones in two subsets; the
    first validation row (4) gets ``validation_row_labels`` for cat and dog."""
    cat4, dog4 = validation_row_labels
    raw = pd.DataFrame({
        "filepath": [f"{i}.png" for i in range(8)],
        "exclude":    ["", "", "", "", "", "True", "", ""],
        "validation": ["", "", "", "", "True", "", "True", ""],
        "subset":     ["a", "a", "b", "b", "a", "b", "", "a"],
        "cat":        ["", "1", "1", "0", cat4, "1", "", ""],
        "dog":        ["", "", "0", "1", dog4, "", "", "0"],
    }, dtype=str)
    return from_dataframe(raw, root=".", path=None)


@pytest.fixture
def table():
    return subsets_table()


@pytest.mark.parametrize("subset, rows", [
    ("unlabeled", [0]),            # 4 and 6 are validation, 5 excluded
    ("partial", [1, 7]),
    ("labeled", [2, 3]),
    ("excluded", [5]),
    ("validation", [4, 6]),
    ("all", [0, 1, 2, 3, 4, 6, 7]),
    ("contains:cat", [1, 2]),
    ("lacks:cat", [3]),
    ("lacks:dog", [2, 7]),
    ("unlabeled:dog", [0, 1, 4, 6]),
    ("unlabeled:cat", [0, 4, 6, 7]),
    ("subset:a", [0, 1, 4, 7]),
    ("subset:b", [2, 3]),
])
def test_subsets(table, subset, rows):
    assert np.flatnonzero(candidate_mask(table, subset)).tolist() == rows


@pytest.mark.parametrize("subset, message", [
    ("unlabelled", "unknown subset 'unlabelled' (did you mean 'unlabeled'?); valid subsets: unlabeled, partial"),
    ("contain:cat", "unknown subset 'contain:' in 'contain:cat' (did you mean 'contains:'?)"),
    ("contains:cta", "unknown class 'cta' in 'contains:cta' (did you mean 'cat'?); valid classes: cat, dog"),
    ("subset:c", "unknown subset value 'c' in 'subset:c'; valid subset values: a, b"),
    ("contains:", "unknown subset 'contains:'"),
])
def test_subset_errors(table, subset, message):
    with pytest.raises(UserError) as error:
        candidate_mask(table, subset)
    assert message in str(error.value)


def test_subset_without_subset_column(table):
    table.df = table.df.drop(columns="subset")
    with pytest.raises(UserError, match="no 'subset' column"):
        candidate_mask(table, "subset:a")


# --- parsing and errors ----------------------------------------------------------------------------

def test_parse_strategy():
    assert parse_strategy("margin", TWO) == ("margin", None)
    assert parse_strategy(" high:dog ", TWO) == ("high", 1)
    assert parse_strategy("guide:cat", TWO) == ("guide", 0)


@pytest.mark.parametrize("text, message", [
    ("entropyy", "unknown strategy 'entropyy' (did you mean 'entropy'?); valid strategies: auto, random, entropy"),
    ("maxent:dgo", "unknown class 'dgo' in 'maxent:dgo' (did you mean 'dog'?); valid classes: cat, dog"),
    ("hihg:cat", "unknown strategy 'hihg:' in 'hihg:cat' (did you mean 'high:'?)"),
    ("maxent", "strategy 'maxent' needs a class: 'maxent:<class>' (classes: cat, dog)"),
    ("high:", "needs a class after the colon"),
    ("entropy:cat", "takes no class (got 'entropy:cat'); for one class's entropy use 'maxent:cat'"),
])
def test_strategy_errors(text, message):
    with pytest.raises(UserError) as error:
        parse_strategy(text, TWO)
    assert message in str(error.value)


@pytest.mark.parametrize("strategy, p, x, message", [
    ("badge", True, False, "badge needs probabilities and features (missing: features); run `patchcfg embed`"),
    ("badge", False, False, "missing: probabilities, features"),
    ("entropy", False, True, "entropy needs probabilities (missing: probabilities); score the images first"),
    ("high:cat", False, True, "high:cat needs probabilities"),
    ("diversity", True, False, "diversity needs features (missing: features)"),
    ("guide:dog", False, False, "guide:dog needs probabilities or features"),
])
def test_missing_inputs(strategy, p, x, message):
    probs = np.full((5, 2), 0.5) if p else None
    feats = np.zeros((5, 3)) if x else None
    with pytest.raises(UserError) as error:
        ranked(strategy, probs, feats, n=2)
    assert message in str(error.value)


def test_bad_inputs():
    p = np.full((5, 2), 0.5)
    with pytest.raises(UserError, match=r"probabilities have shape \(5, 2\) but the label table needs \(6, 2\)"):
        ranked("entropy", p, candidates=np.ones(6, bool))
    with pytest.raises(UserError, match="not logits"):
        ranked("entropy", p * 3)
    with pytest.raises(UserError, match="n must be"):
        ranked("entropy", p, n=0)
    with pytest.raises(UserError, match="explore must lie between 0 and 1"):
        ranked("entropy", p, explore=1.5)
    with pytest.raises(UserError, match="did you mean 'weighted'"):
        ranked("high:cat", p, sampling="weigthed")
    with pytest.raises(UserError, match="not finite on row 2"):
        ranked("entropy", np.where(np.arange(10).reshape(5, 2) == 4, np.nan, p))


# --- quick head -------------------------------------------------------------------------------------

def test_quick_head_probabilities():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5))
    truth = (x[:, 0] > 0).astype(float)
    labels = -np.ones((120, 3))
    labels[:60, 0] = truth[:60]           # class 0: learnable from the first 60 rows
    labels[:10, 1] = 1                    # class 1: only positives known
    # class 2: nothing known
    train = np.ones(120, bool)
    train[50:60] = False                  # masked rows do not train
    labels[50:60, 0] = 1 - truth[50:60]   # (wrong on purpose: ignored)
    p = quick_head_probabilities(x, labels, train, C=1.0, seed=0)
    assert p.shape == (120, 3)
    assert np.mean((p[60:, 0] > 0.5) == truth[60:].astype(bool)) > 0.9
    assert np.allclose(p[:, 1], 11 / 12) and np.allclose(p[:, 2], 0.5)
    got = rank("maxent:c2", probabilities=p, features=None, classes=["c0", "c1", "c2"],
               candidates=np.ones(120, bool), n=3)
    assert got["score"].tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_quick_head_probabilities_of_exclusive_classes_sum_to_one():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 4))
    digit = np.argmax(x[:, :3], axis=1)
    labels = np.stack([(digit == d).astype(float) for d in range(3)], axis=1)
    train = np.arange(90) < 45
    independent = quick_head_probabilities(x, labels, train, seed=0)
    p = quick_head_probabilities(x, labels, train, seed=0, exclusive=True)
    assert not np.allclose(independent.sum(axis=1), 1) and np.allclose(p.sum(axis=1), 1)
    assert (p.argmax(axis=1) == independent.argmax(axis=1)).all()
    assert np.allclose(p, independent / independent.sum(axis=1, keepdims=True))


def test_import_does_not_load_tensorflow():
    code = "import sys, patchcfg.active; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("subset, rows", [
    ("unlabeled", [1, 2, 3, 4, 7]),  # the default: every labelled row (5 is excluded)
    ("labeled", [2, 3, 4]),
    ("partial", [1, 7]),
    ("subset:b", [2, 3]),
    ("validation", [4]),
    ("all", [1, 2, 3, 4, 7]),
])
def test_mistakes_takes_the_labelled_rows(subset, rows):
    """``mistakes`` reviews labelled rows: the default pool ``unlabeled`` (which holds none) becomes
    every labelled row not excluded; another subset keeps its labelled rows."""
    table = subsets_table(validation_row_labels=("1", "0"))
    assert np.flatnonzero(candidate_mask(table, subset, strategy="mistakes")).tolist() == rows


def test_other_strategies_keep_the_subset():
    table = subsets_table(validation_row_labels=("1", "0"))
    for strategy in (None, "entropy", "high:cat"):
        assert np.flatnonzero(candidate_mask(table, "unlabeled", strategy=strategy)).tolist() == [0]


def test_mistakes_ranks_the_default_pool_without_a_subset():
    rng = np.random.default_rng(0)
    rows = 80
    truth = rng.integers(0, 2, rows)
    features = (truth[:, None] * 3 + rng.normal(size=(rows, 4))).astype(np.float32)
    cat = np.where(np.arange(rows) < 60, truth, -1)
    cat[[3, 9]] = 1 - cat[[3, 9]]  # two wrong labels
    raw = pd.DataFrame({"filepath": [f"{i}.png" for i in range(rows)], "exclude": "", "validation": "",
                        "cat": [str(v) if v >= 0 else "" for v in cat]}, dtype=str)
    table = from_dataframe(raw, root=".", path=None)
    candidates = candidate_mask(table, "unlabeled", strategy="mistakes")
    assert candidates.sum() == 60
    ranking = rank("mistakes", probabilities=None, features=features, classes=table.classes,
                   candidates=candidates, n=2, labels=table.label_matrix())
    assert sorted(ranking["row"].tolist()) == [3, 9]
