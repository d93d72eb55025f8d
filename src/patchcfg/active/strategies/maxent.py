"""``maxent:<c>``: rows whose class c is closest to 0.5 (patchwork's per-class entropy)."""

from patchcfg.active import scores
from patchcfg.active.strategies import Strategy, register


@register
class MaxEnt(Strategy):
    name = "maxent"
    takes_class = True
    ranks_first = "rows whose class c is closest to 0.5"
    sigmoid_score = "H2(p_c)"
    softmax_score = "H2(p_c)"

    def score(self, query, rng):
        return scores.binary_entropy(query.probabilities[:, query.cls])
