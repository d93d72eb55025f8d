"""``margin``: the smallest gap between the two most likely answers first (Scheffer et al. 2001,
"Active Hidden Markov Models for Information Extraction"); see :mod:`patchcfg.active.scores`."""

from patchcfg.active import scores
from patchcfg.active.strategies import Strategy, register


@register
class Margin(Strategy):
    name = "margin"
    ranks_first = "the smallest gap between the two most likely answers"
    sigmoid_score = "1 − min over classes of |2p_c − 1|"
    softmax_score = "1 − (p_top1 − p_top2); two classes: 1 − |p0 − p1|"

    def score(self, query, rng):
        return scores.margin(query.probabilities, query.exclusive)
