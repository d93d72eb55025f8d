"""The scorers behind the learner: the quick head and a fold ensemble answer the same two calls."""

import numpy as np

from patchcfg.label.scorers import FoldEnsembleScorer, LabelledRows, QuickHeadScorer, Scores


def rows_of(n=4):
    labels = np.full((n, 2), -1, np.int8)
    labels[0] = [1, 0]
    train = np.ones(n, bool)
    return LabelledRows(labels, train, ~train, ["zero", "one"])


class FakeWorker:
    def __init__(self):
        self.calls = []

    def fit(self, key, features, labels, train, validation, seed, classes, exclusive, mapped=None):
        self.calls.append((key, seed, classes, exclusive, mapped))
        return {"probabilities": np.full((len(labels), 2), 0.25, np.float32), "metrics": {"val_macro_auc": None}}


def test_the_quick_head_fits_in_the_worker_and_scores_every_row_with_features():
    worker, rows = FakeWorker(), rows_of()
    head = QuickHeadScorer(worker, np.zeros((4, 3), np.float32), "k", None, 7, False)
    head.fit(rows)
    scores = head.score(rows)
    assert isinstance(scores, Scores) and scores.scored is None and scores.probabilities.shape == (4, 2)
    assert scores.metrics == {"val_macro_auc": None} and worker.calls == [("k", 7, ["zero", "one"], False, None)]


def test_a_fold_ensemble_learns_nothing_and_scores_the_readable_images(monkeypatch):
    import patchcfg.tasks.predict as predict

    def ensemble(models, model_data, paths, classes, data_cfg, tta, fill):
        probabilities = np.full((len(paths), classes), fill, np.float32)
        probabilities[[0, 2]] = 0.9
        return probabilities, np.array([0, 2])

    monkeypatch.setattr(predict, "ensemble_probabilities", ensemble)
    scorer = FoldEnsembleScorer(["model"], {}, ["a.png", "b.png", "c.png", "d.png"], {}, "none")
    rows = rows_of()
    scorer.fit(rows)
    scores = scorer.score(rows)
    assert scores.scored.tolist() == [True, False, True, False] and scores.metrics == {}
    assert scores.probabilities[1].tolist() == [0.5, 0.5] and scorer.source == "fine-tuned ensemble"
