"""``auto``: the cold-start strategy until the labelled rows reach the handover, then the uncertainty
strategy; each pick says which strategy made it."""

import numpy as np
import pytest

from patchcfg.active import rank
from patchcfg.errors import UserError

CLASSES = ["a", "b", "c"]


def inputs(n_labelled, rows=60, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, 4)).astype(np.float32)
    probabilities = rng.uniform(size=(rows, 3))
    labels = np.full((rows, 3), -1)
    labels[:n_labelled] = np.eye(3, dtype=int)[np.arange(n_labelled) % 3]
    candidates = (labels < 0).all(axis=1)
    return dict(probabilities=probabilities, features=features, labels=labels, candidates=candidates,
                classes=CLASSES)


SCHEDULE = {"cold_start": "diversity", "then": "entropy", "handover": None, "handover_per_class": 2}


@pytest.mark.parametrize("n_labelled,expected", [(0, "diversity"), (5, "diversity"), (6, "entropy"), (9, "entropy")])
def test_auto_hands_over_at_the_budget(n_labelled, expected):
    given = inputs(n_labelled)  # handover_per_class 2 x 3 classes = 6 labelled rows
    ranking = rank("auto", n=5, schedule=SCHEDULE, **given)
    assert set(ranking["picked_by"]) == {expected}
    same = rank(expected, n=5, **given)
    assert list(ranking["row"]) == list(same["row"])  # the strategy in charge, as if asked directly


def test_an_explicit_handover_overrides_the_per_class_budget_and_explore_is_shared():
    given = inputs(4)
    assert set(rank("auto", n=4, schedule={**SCHEDULE, "handover": 4}, **given)["picked_by"]) == {"entropy"}
    mixed = rank("auto", n=10, explore=0.2, schedule=SCHEDULE, **given)
    assert sorted(mixed["picked_by"].value_counts().items()) == [("diversity", 8), ("explore", 2)]


def test_auto_takes_what_it_has():
    given = inputs(9)
    no_model = rank("auto", n=5, schedule=SCHEDULE, **{**given, "probabilities": None})
    assert set(no_model["picked_by"]) == {"diversity"}  # past the budget without scores: still cold start
    nothing = rank("auto", n=5, schedule=SCHEDULE, **{**given, "probabilities": None, "features": None})
    assert set(nothing["picked_by"]) == {"random"}


def test_the_schedule_names_other_strategies():
    with pytest.raises(UserError, match="auto cannot hand over to itself"):
        rank("auto", n=5, schedule={**SCHEDULE, "then": "auto"}, **inputs(0))
    with pytest.raises(UserError, match="unknown strategy"):
        rank("auto", n=5, schedule={**SCHEDULE, "cold_start": "typicluster"}, **inputs(0))
    ranking = rank("auto", n=3, schedule={**SCHEDULE, "then": "high:b", "handover": 0}, **inputs(3))
    assert set(ranking["picked_by"]) == {"high:b"}


def test_only_the_rows_the_model_trains_on_count_toward_the_handover():
    given = inputs(9)
    train = np.ones(60, bool)
    train[:6] = False  # six of the nine labelled rows are validation rows
    ranking = rank("auto", n=5, schedule={**SCHEDULE, "train": train}, **given)
    assert set(ranking["picked_by"]) == {"diversity"}  # 3 counted < 6
