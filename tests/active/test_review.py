"""Reviewing label mistakes: out-of-fold quick-head probabilities (no row scored by a model that saw
it), confident learning per class, planted flips ranked first, and ``patchcfg labels review``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from patchcfg.active import review as rv
from patchcfg.active.quick_head import QuickHead
from patchcfg.models.outputs import ColumnGroup


def blobs(n=240, classes=3, dims=8, seed=0, spread=0.4):
    """Well separated clusters: (features, one-hot labels, cluster of each row)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (classes, dims)) * 6
    cluster = np.arange(n) % classes
    x = centres[cluster] + rng.normal(0, spread, (n, dims))
    labels = np.eye(classes, dtype=np.float32)[cluster]
    return x.astype(np.float32), labels, cluster


def plant(labels, cluster, rows, rng):
    """Move the 1 of each of ``rows`` to another class; the set of (row, class) cells changed."""
    noisy = labels.copy()
    changed = set()
    for r in rows:
        new = int(rng.choice([c for c in range(labels.shape[1]) if c != cluster[r]]))
        noisy[r, cluster[r]], noisy[r, new] = 0, 1
        changed |= {(int(r), int(cluster[r])), (int(r), new)}
    return noisy, changed


def test_out_of_fold_never_scores_a_row_with_a_model_that_trained_on_it(monkeypatch):
    x, labels, _ = blobs(n=90)
    labels[::7, 1] = -1  # some partial rows
    labels[5] = -1  # a row with nothing known: neither trained on nor scored
    fits = []
    original = QuickHead.fit.__func__

    def recording_fit(cls, features, y, train_mask, *args, **kwargs):
        head = original(cls, features, y, train_mask, *args, **kwargs)
        record = {"trained": set(np.flatnonzero(np.asarray(train_mask) & (np.asarray(y) >= 0).any(axis=1)).tolist()),
                  "scored": set()}
        fits.append(record)
        probabilities = head.probabilities

        def recording_probabilities(rows=None):
            record["scored"] |= set(np.flatnonzero(head.scored).tolist() if rows is None else np.asarray(rows).tolist())
            return probabilities(rows)

        head.probabilities = recording_probabilities
        return head

    monkeypatch.setattr(QuickHead, "fit", classmethod(recording_fit))
    p, judged, fold = rv.out_of_fold_probabilities(x, labels, folds=4, seed=3)
    labelled = set(np.flatnonzero((labels >= 0).any(axis=1)).tolist())
    assert len(fits) == 4
    for record in fits:
        assert record["scored"], "every fold scores its rows"
        assert not record["scored"] & record["trained"], "a row was scored by a model that trained on it"
        assert record["trained"] <= labelled
    scored = [r for record in fits for r in record["scored"]]
    assert sorted(scored) == sorted(labelled), "every labelled row is scored exactly once"
    assert 5 not in scored and fold[5] == -1
    assert np.isfinite(p[sorted(labelled)]).all() and np.isnan(p[5]).all()
    # with the review's C chosen by log-loss, each C's fits keep to the same rule
    fits.clear()
    rv.review_labels(x, labels, folds=3, C="auto")
    assert len(fits) % 3 == 0 and len(fits) >= 6
    assert all(not f["scored"] & f["trained"] for f in fits)


def test_folds_are_stratified_by_each_rows_label():
    labels = np.full((103, 4), -1, np.float32)
    cluster = np.r_[np.zeros(50, int), np.ones(30, int), np.full(20, 2), np.full(3, 3)]
    labels[np.arange(103), cluster] = 1
    labels[:80, 2] = 0
    fold = rv.stratified_folds(labels, np.arange(100), folds=5, seed=1)
    assert (fold[100:] == -1).all()
    counts = np.array([np.bincount(fold[:100][cluster[:100] == c], minlength=5) for c in range(3)])
    assert (counts.max(axis=1) - counts.min(axis=1) <= 1).all(), counts
    sizes = np.bincount(fold[:100], minlength=5)
    assert sizes.max() - sizes.min() <= 1
    assert (rv.stratified_folds(labels, np.arange(100), 5, 1) == fold).all(), "deterministic per seed"
    assert set(rv.stratified_folds(labels, np.arange(3), folds=5)[:3]) == {0, 1, 2}, "k = min(folds, rows)"


def test_confident_learning_thresholds_and_suspects():
    # one class: labelled 1 with p 0.9, 0.8, 0.1 (t1 = 0.6); labelled 0 with p 0.1, 0.2, 0.9 (t0 = 0.6)
    labels = np.array([[1], [1], [1], [0], [0], [0]], np.float32)
    p = np.array([[0.9], [0.8], [0.1], [0.1], [0.2], [0.9]])
    cells = rv.confident_learning(p, labels, method="threshold")
    assert cells["threshold"].round(6).tolist() == [0.6] * 6
    assert cells["suspect"].tolist() == [False, False, True, False, False, True]
    assert cells["score"].round(6).tolist() == [0.1, 0.2, 0.9, 0.1, 0.2, 0.9]
    joint = rv.confident_learning(p, labels)
    assert joint["suspect"].tolist() == [False, False, True, False, False, True]
    # a 1 with p 0.45: below t1 = 0.483 (threshold rule) but 1 - p = 0.55 < t0, not confidently 0 (joint)
    p[1] = 0.45
    assert rv.confident_learning(p, labels, method="threshold")["suspect"].tolist()[1]
    assert not rv.confident_learning(p, labels)["suspect"].tolist()[1]
    # unknown cells, cells not judged and classes known with one value only are never suspects
    labels2 = np.array([[1, 1], [0, 1], [-1, 1]], np.float32)
    p2 = np.array([[0.1, 0.1], [0.9, 0.9], [0.5, 0.5]])
    judged = np.array([[True, True], [False, True], [True, True]])
    cells = rv.confident_learning(p2, labels2, judged, method="threshold")
    assert list(zip(cells["row"], cells["class"], strict=True)) == [(0, 0), (0, 1), (1, 1), (2, 1)]
    assert not cells["suspect"].any()


def test_a_softmax_group_caps_its_zeros_by_the_rows_one():
    # two rows of an exclusive pair of classes; row 0's 1 is confidently right: its 0 is no suspect
    labels = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [1, 0]], np.float32)
    p = np.array([[0.7, 0.9], [0.9, 0.1], [0.1, 0.9], [0.2, 0.8], [0.1, 0.9]])
    plain = rv.confident_learning(p, labels, method="threshold")
    grouped = rv.confident_learning(p, labels, method="threshold", exclusive=True)
    cell = (plain["row"] == 0) & (plain["class"] == 1)
    assert plain.loc[cell, "suspect"].item() and not grouped.loc[cell, "suspect"].item()
    assert grouped.loc[cell, "score"].item() == pytest.approx(0.3)  # capped by the 1's score, 1 - 0.7
    # output groups: only the softmax ones count
    groups = [ColumnGroup("pair", "softmax", (0, 1))]
    assert grouped.equals(rv.confident_learning(p, labels, method="threshold", exclusive=groups))
    sigmoid = [ColumnGroup("pair", "sigmoid", (0, 1))]
    assert plain.equals(rv.confident_learning(p, labels, method="threshold", exclusive=sigmoid))
    # row 4: its 1 is wrong (p 0.1) and its 0 too (p 0.9): both suspects, in either view
    last = grouped[grouped["row"] == 4]
    assert last["suspect"].all()


@pytest.mark.parametrize("exclusive", [False, True, "groups"])
def test_planted_flips_rank_at_the_top(exclusive):
    x, labels, cluster = blobs(n=300, classes=3, seed=1)
    rng = np.random.default_rng(2)
    flipped_rows = rng.choice(len(x), 8, replace=False)
    noisy, changed = plant(labels, cluster, flipped_rows, rng)
    if exclusive == "groups":
        exclusive = [ColumnGroup("all", "softmax", (0, 1, 2))]
    review = rv.review_labels(x, noisy, folds=5, seed=0, exclusive=exclusive)
    top = review.suspects(len(changed))
    found = set(zip(top["row"], top["class"], strict=True))
    assert found <= changed, "every suspect (off the confident joint's diagonal) is a planted flip"
    assert len(found) >= 0.75 * len(changed)
    assert top["rank"].tolist() == list(range(1, len(top) + 1))
    assert (top["score"].diff().dropna() <= 0).all()
    score, suspect = review.row_scores(len(x))
    worst = np.argsort(-score, kind="stable")[:len(flipped_rows)]
    assert set(worst) == set(flipped_rows.tolist()), "the mislabelled rows rank first"
    assert set(np.flatnonzero(suspect)) <= set(flipped_rows.tolist())
    assert suspect.sum() >= len(flipped_rows) - 1
    # prune_by_noise_rate counts the flips from the confident joint and takes the largest margins
    pruned = rv.confident_learning(review.probabilities, noisy, review.judged, "prune_by_noise_rate", exclusive)
    top = rv.LabelReview(pruned, review.probabilities, review.folds).suspects(len(changed))
    found = set(zip(top["row"], top["class"], strict=True))
    assert found <= changed and len(found) >= len(changed) - 2


def test_planted_flips_of_a_multi_hot_attribute_and_partial_rows():
    x, labels, cluster = blobs(n=240, classes=2, seed=4)
    labels = np.c_[labels, (cluster == 1).astype(np.float32)]  # a third class, the same as the second
    labels[1::4, 0] = -1  # partial rows
    noisy = labels.copy()
    flipped = [(10, 2), (33, 2), (50, 1), (120, 0)]
    for r, c in flipped:
        noisy[r, c] = 1 - noisy[r, c]
    for method in rv.METHODS[:2]:
        review = rv.review_labels(x, noisy, folds=5, method=method)
        top = review.suspects(len(flipped))
        assert set(zip(top["row"], top["class"], strict=True)) == set(flipped), method


def test_a_class_with_one_value_left_in_the_other_folds_is_not_judged():
    x, labels, _ = blobs(n=60, classes=2)
    labels = np.c_[labels, np.zeros(60, np.float32)]
    labels[7, 2] = 1  # the only positive of class 2: its folds without it have none
    review = rv.review_labels(x, labels, folds=3, C=1.0)
    judged = review.cells[review.cells["class"] == 2]
    assert 7 not in set(judged["row"]), "scored by a prior, not by a model"
    assert not review.suspects()["class"].eq(2).any()


def test_review_checks_its_inputs():
    from patchcfg.errors import UserError

    x, labels, _ = blobs(n=30)
    with pytest.raises(UserError, match="folds"):
        rv.review_labels(x, labels, folds=1)
    with pytest.raises(UserError, match="method"):
        rv.review_labels(x, labels, method="vibes")
    empty = np.full_like(labels, -1)
    empty[0, 0] = 1
    with pytest.raises(UserError, match="at least 2 labelled rows"):
        rv.review_labels(x, empty)


# --------------------------------------------------------------------------- the CLI


def review_setup(tmp_path, n=150, flips=(4, 17, 40)):
    """A table of three exclusive classes over separable features (cached as an embed would),
    with the rows ``flips`` mislabelled, and a config; (config path, table path, experiments root)."""
    x, labels, cluster = blobs(n=n, classes=3, seed=5)
    noisy, changed = plant(labels, cluster, list(flips), np.random.default_rng(0))
    data = tmp_path / "data"
    data.mkdir()
    frame = pd.DataFrame({"filepath": [f"img/{i}.png" for i in range(n)], "exclude": False, "validation": False})
    for c, name in enumerate(("a", "b", "c")):
        frame[name] = noisy[:, c].astype(int).astype(object)
    frame.loc[n - 1, ["a", "b", "c"]] = ""  # one unlabelled row
    frame.loc[n - 2, "exclude"] = True
    frame.to_csv(data / "labels.csv", index=False)
    root = tmp_path / "experiments"
    embed = root / "rev" / "embed"
    embed.mkdir(parents=True)
    paths = [str((data / p).resolve()) for p in frame["filepath"]]
    order = np.random.default_rng(1).permutation(n)  # the cache in another order than the table
    np.save(embed / "features.npy", x[order])
    pd.DataFrame({"filepath": [paths[i] for i in order]}).to_csv(embed / "index.csv", index=False)
    config = {"name": "rev", "seed": 2, "data": {"labels": str(data / "labels.csv"), "imshape": [16, 16]},
              "backbone": {"name": "tiny"}, "augmentation": {"preset": "none"},
              "finetune": {"output": {"type": "softmax"}}}  # exclusive classes: reviewed as one problem
    path = tmp_path / "rev.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, data / "labels.csv", root, changed


def invoke(*args):
    from patchcfg.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_labels_review_end_to_end(tmp_path):
    config, table, root, changed = review_setup(tmp_path)
    before = table.read_text()
    out = tmp_path / "review.csv"
    result = invoke("labels", "review", config, "--out", out, "--experiments", root)
    assert result.exit_code == 0, result.output
    assert "suspects" in result.output and str(out) in result.output
    frame = pd.read_csv(out)
    assert list(frame.columns) == list(rv.COLUMNS)
    names = {0: "a", 1: "b", 2: "c"}
    written = set(zip(frame["row"], frame["class"], strict=True))
    assert written <= {(r, names[c]) for r, c in changed}, "the cache's rows were matched to the table's"
    assert len({r for r, _ in written}) >= 2
    assert frame["rank"].tolist() == list(range(1, len(frame) + 1))
    assert frame["filepath"][0] == f"img/{frame['row'][0]}.png"
    assert set(frame["given"]) <= {0, 1} and frame["p"].between(0, 1).all()
    assert 148 not in set(frame["row"]), "excluded rows are not reviewed"
    assert table.read_text() == before, "the table is only read"
    # --n, --folds; the review file it wrote is replaced without --force
    result = invoke("labels", "review", config, "--out", out, "--experiments", root, "--n", 2, "--folds", 3)
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out)) == 2
    assert not list(tmp_path.glob("review.csv.*")), "written atomically, nothing left beside it"


def test_labels_review_refusals(tmp_path):
    config, table, root, _ = review_setup(tmp_path)
    other = tmp_path / "notes.csv"
    other.write_text("mine\n")
    result = invoke("labels", "review", config, "--out", other, "--experiments", root)
    assert result.exit_code == 2 and "--force" in result.output and other.read_text() == "mine\n"
    result = invoke("labels", "review", config, "--out", table, "--experiments", root)
    assert result.exit_code == 2 and "label table" in result.output
    result = invoke("labels", "review", config, "--out", tmp_path / "r.csv", "--experiments", tmp_path / "none")
    assert result.exit_code == 2, result.output
    assert f"run `patchcfg embed {config}` first" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "r.csv").exists()


# --------------------------------------------------------------------------- the mistakes strategy


def test_the_mistakes_strategy_ranks_labelled_rows_by_their_worst_cell():
    from patchcfg.active import rank
    from patchcfg.active.strategies import get_strategy
    from patchcfg.errors import UserError

    x, labels, cluster = blobs(n=120, classes=3, seed=6)
    noisy, changed = plant(labels, cluster, [3, 50], np.random.default_rng(1))
    noisy[100:] = -1  # unlabelled rows: nothing to review, score 0, last
    candidates = np.ones(len(x), bool)
    picks = rank("mistakes", probabilities=None, features=x, classes=["a", "b", "c"], candidates=candidates,
                 n=120, labels=noisy, exclusive=True)
    assert set(picks["row"][:2]) == {3, 50}
    assert (picks["picked_by"] == "mistakes").all() and picks["score"].is_monotonic_decreasing
    assert set(picks["row"][-20:]) == set(range(100, 120)) and (picks["score"][-20:] == 0).all()
    strategy = get_strategy("mistakes")
    assert strategy.reviews_labels and "features" in strategy.needs
    with pytest.raises(UserError, match="features"):
        rank("mistakes", probabilities=None, features=None, classes=["a", "b", "c"], candidates=candidates, n=5,
             labels=noisy)
    with pytest.raises(UserError, match="label some images first"):
        rank("mistakes", probabilities=None, features=x, classes=["a", "b", "c"], candidates=candidates, n=5,
             labels=np.full_like(noisy, -1))


def test_labels_review_methods_and_rows_without_features(tmp_path):
    config, _, root, changed = review_setup(tmp_path)
    embed = root / "rev" / "embed"
    features, index = np.load(embed / "features.npy"), pd.read_csv(embed / "index.csv")
    np.save(embed / "features.npy", features[:-5])  # five rows the embed has not reached
    index[:-5].to_csv(embed / "index.csv", index=False)
    counts = {}
    for method in ("confident_joint", "threshold"):
        out = tmp_path / f"{method}.csv"
        result = invoke("labels", "review", config, "--out", out, "--experiments", root, "--method", method)
        assert result.exit_code == 0, result.output
        assert "labelled rows without cached features were skipped" in result.output
        counts[method] = len(pd.read_csv(out))
    assert counts["threshold"] >= counts["confident_joint"] > 0
