"""``mistakes``: labelled rows whose labels look wrong, to review them (:mod:`patchcfg.active.review`):
out-of-fold quick-head probabilities on the features, then confident learning (Northcutt, Jiang &
Chuang, JAIR 2021). A row's score is its worst known cell's margin ``|label - p|``; rows holding a
confident-learning suspect come first. Rows without a known cell score 0 and come last. Its
candidates are labelled rows (``reviews_labels``): the subset's labelled rows, and for the default
pool ``unlabeled`` every labelled row not excluded (:func:`patchcfg.active.candidate_mask` given
the strategy; the labelling app's queue does the same)."""

from __future__ import annotations

import hashlib
import threading

import numpy as np

from patchcfg.active.strategies import Strategy, register

#: folds of the out-of-fold fit; the folds' seed is fixed, so that the order stays put between calls
FOLDS = 5
SEED = 0

_cache: dict = {}
_cache_lock = threading.Lock()


def review_of(query):
    """The review of the query's labels on its features (the last one is kept: a page asking for
    the next images with nothing changed reuses it)."""
    from patchcfg.active.review import review_labels

    features, labels = query.features, query.labels
    exclusive = query.exclusive  # True, False or the output groups: a softmax group is judged together
    base = features.base
    index = features.index
    key = (id(base), base.shape, getattr(base, "filename", None), features.shape,
           None if index is None else hashlib.sha1(np.ascontiguousarray(index)).hexdigest(),
           hashlib.sha1(np.ascontiguousarray(labels, dtype=np.float32)).hexdigest(), repr(exclusive))
    with _cache_lock:
        if _cache.get("key") == key:
            return _cache["review"]
    review = review_labels(features, labels, folds=FOLDS, seed=SEED, exclusive=exclusive)
    with _cache_lock:
        _cache.clear()
        _cache.update(key=key, review=review, base=base)  # base kept: its id is not reused meanwhile
    return review


@register
class Mistakes(Strategy):
    name = "mistakes"
    needs = ("features",)
    #: the labelling app's queue takes this strategy's candidates among the labelled rows
    reviews_labels = True
    ranks_first = "labelled rows whose labels look wrong (to review them)"
    sigmoid_score = "worst known cell's |label − p| (out-of-fold quick head); confident-learning suspects first"
    needs_text = "features and labelled rows"

    def select(self, query, k, rng):
        from patchcfg.errors import UserError

        if query.labels is None or not (query.labels >= 0).any():
            raise UserError(f"{query.label} reviews labelled rows: label some images first")
        review = review_of(query)
        score, suspect = review.row_scores(len(query.labels))
        score, suspect = score[query.rows], suspect[query.rows]
        order = np.lexsort((np.arange(len(score)), -score, ~suspect))
        picks = order[:k]
        return picks, score[picks], [query.label] * len(picks), score
