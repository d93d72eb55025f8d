"""``least_confidence``: the least likely most-likely labelling first (Lewis & Gale 1994, "A Sequential
Algorithm for Training Text Classifiers"); see :mod:`patchcfg.active.scores`."""

from patchcfg.active import scores
from patchcfg.active.strategies import Strategy, register


@register
class LeastConfidence(Strategy):
    name = "least_confidence"
    ranks_first = "the least likely most-likely labelling"
    sigmoid_score = "1 − Π_c max(p_c, 1 − p_c)"
    softmax_score = "1 − p_top1"

    def score(self, query, rng):
        return scores.least_confidence(query.probabilities, query.exclusive)
