"""typiclust and probcover count as labelled only the rows the model trains on when the query says
which (``auto`` passes its ``train`` rows on): a region labelled only by validation rows still needs
a label, as in the papers, whose labelled set is the training set."""

import numpy as np
import pytest

from patchcfg.active import rank
from patchcfg.active.rows import RowFeatures
from patchcfg.active.strategies import Query, get_strategy

CLASSES = ["a", "b", "c"]


def blobs(seed=3):
    rng = np.random.default_rng(seed)
    sizes = [14, 12, 10, 9, 8, 7]
    centres = np.eye(6)[:, :5] * 6 + np.eye(6)[:, 5:].repeat(5, axis=1) * -6  # six directions apart
    blob = np.repeat(np.arange(6), sizes)
    x = centres[blob] + rng.normal(size=(len(blob), 5)) * 0.3
    labels = -np.ones((len(blob), 3))
    labels[[0, 14, 26, 36], 0] = 1  # one labelled row in each of the four largest blobs
    return x, labels, blob


def select(name, x, labels, candidates, k, seed, schedule=None):
    rows = np.flatnonzero(candidates)
    query = Query(label=name, cls=None, rows=rows, probabilities=None, features=RowFeatures(x),
                  labels=labels, schedule=schedule)
    positions, scores, _, _ = get_strategy(name).select(query, k, np.random.default_rng(seed))
    return rows[positions].tolist(), np.asarray(scores).tolist()


@pytest.mark.parametrize("name", ["typiclust", "probcover"])
@pytest.mark.parametrize("seed", [0, 1])
def test_validation_labels_count_as_no_labels(name, seed):
    x, labels, _ = blobs()
    candidates = (labels < 0).all(axis=1)
    train = np.ones(len(x), bool)
    train[[0, 14]] = False  # two of the four labelled rows are validation rows
    blanked = labels.copy()
    blanked[~train] = -1  # as if those rows were neither labelled nor candidates
    got = select(name, x, labels, candidates, 4, seed, schedule={"train": train})
    assert got == select(name, x, blanked, candidates, 4, seed)
    if name == "typiclust":  # the two validation-only blobs are unlabelled again: largest first
        assert got != select(name, x, labels, candidates, 4, seed)


def test_auto_cold_start_goes_to_the_blobs_labelled_only_for_validation():
    x, labels, blob = blobs()
    candidates = (labels < 0).all(axis=1)
    train = np.ones(len(x), bool)
    train[[0, 14, 26, 36]] = False  # every label is a validation label
    schedule = {"cold_start": "typiclust", "then": "badge", "handover": None, "handover_per_class": 3,
                "train": train}
    ranking = rank("auto", n=6, probabilities=None, features=x, labels=labels, candidates=candidates,
                   classes=CLASSES, schedule=schedule)
    assert set(ranking["picked_by"]) == {"typiclust"}
    assert sorted(blob[ranking["row"]].tolist()) == [0, 1, 2, 3, 4, 5]  # every blob once, none skipped
    counted = rank("auto", n=2, probabilities=None, features=x, labels=labels, candidates=candidates,
                   classes=CLASSES, schedule={**schedule, "train": None})
    assert sorted(blob[counted["row"]].tolist()) == [4, 5]  # validation labels counted: the rest only


def test_auto_after_the_handover_without_features_takes_random():
    from patchcfg.active.strategies.auto import phase

    schedule = {"cold_start": "typiclust", "then": "badge", "handover": 1, "handover_per_class": 3,
                "parsed": {"typiclust": ("typiclust", None), "badge": ("badge", None), "random": ("random", None)}}
    labels = np.array([[1, 0, 0], [-1, -1, -1]])
    assert phase(schedule, labels, 3, np.full((2, 3), 1 / 3), np.zeros((2, 4)))[0] == "badge"
    name, why = phase(schedule, labels, 3, np.full((2, 3), 1 / 3), None)
    assert name == "random" and "badge needs the cached features" in why
