"""What ranks the labelling queue, behind one narrow interface (:class:`Scorer`): fitted on the
labelled rows, it scores every row of the table. The quick head on the cached features
(:class:`QuickHeadScorer`) and a trained fold ensemble (:class:`FoldEnsembleScorer`) are
interchangeable behind it; the learner versions and applies whichever scores come."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np


class LabelledRows(NamedTuple):
    """The table's labels as a fit reads them (under the store's lock)."""

    labels: np.ndarray  # (rows, classes): 1 present, 0 absent, -1 unknown
    train: np.ndarray  # (rows,) bool: the rows to learn from
    validation: np.ndarray  # (rows,) bool: the rows to measure on
    classes: list[str]


@dataclass
class Scores:
    probabilities: np.ndarray  # (rows, classes) float32
    scored: np.ndarray | None  # (rows,) bool: the rows the probabilities are about; None: every row with features
    metrics: dict = field(default_factory=dict)  # on the validation rows, when the scorer measured them


class Scorer(Protocol):
    #: how the page names the scores
    source: str

    def fit(self, rows: LabelledRows) -> None:
        """Learn from the known labels of the training rows."""

    def score(self, rows: LabelledRows) -> Scores:
        """The probabilities of every row of the table."""


class QuickHeadScorer:
    """The quick head (``patchcfg.active``) on the cached features, fitted in the worker process;
    the worker scores every row and the validation rows in the same call."""

    source = "quick head"

    def __init__(self, worker, features, key, mapped, seed: int, exclusive: bool):
        self.worker, self.features, self.key, self.mapped = worker, features, key, mapped
        self.seed, self.exclusive = seed, exclusive
        self._result: dict | None = None

    def fit(self, rows: LabelledRows) -> None:
        self._result = self.worker.fit(self.key, self.features, rows.labels, rows.train, rows.validation,
                                       self.seed, rows.classes, self.exclusive, mapped=self.mapped)

    def score(self, rows: LabelledRows) -> Scores:
        if self._result is None:
            self.fit(rows)
        return Scores(self._result["probabilities"], None, self._result["metrics"])


class FoldEnsembleScorer:
    """A fold ensemble ``patchcfg finetune`` trained: nothing left to fit; it scores the images of
    ``paths`` (the table's rows), 0.5 on those it cannot read (not scored)."""

    source = "fine-tuned ensemble"

    def __init__(self, models, model_data: dict, paths: list[str], data_cfg: dict, tta: str):
        self.models, self.model_data, self.paths = models, model_data, paths
        self.data_cfg, self.tta = data_cfg, tta

    def fit(self, rows: LabelledRows) -> None:
        """Trained already: the labels of this table are not learnt here."""

    def score(self, rows: LabelledRows) -> Scores:
        from patchcfg.tasks.predict import ensemble_probabilities

        probabilities, readable = ensemble_probabilities(self.models, self.model_data, self.paths,
                                                         len(rows.classes), self.data_cfg, self.tta, 0.5)
        scored = np.zeros(len(self.paths), bool)
        scored[readable] = True
        return Scores(probabilities, scored)
