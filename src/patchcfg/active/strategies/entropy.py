"""``entropy``: the most uncertain rows (patchwork's "max entropy"); see :mod:`patchcfg.active.scores`."""

from patchcfg.active import scores
from patchcfg.active.strategies import Strategy, register


@register
class Entropy(Strategy):
    name = "entropy"
    ranks_first = "the most uncertain rows"
    sigmoid_score = "max over classes of the binary entropy H2(p_c) (patchwork's \"max entropy\")"
    softmax_score = "Shannon entropy / log K"

    def score(self, query, rng):
        return scores.entropy(query.probabilities, query.exclusive)
