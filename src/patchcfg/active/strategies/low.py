"""``low:<c>``: the lowest p_c first; on ``contains:c`` it finds the positives the model misses.
Sampling as for ``high`` (weights (1 - p)⁴ when weighted)."""

from patchcfg.active.strategies import register
from patchcfg.active.strategies.high import High


@register
class Low(High):
    name = "low"
    ranks_first = "the lowest p_c"
    sigmoid_score = "1 − p_c"
    softmax_score = "1 − p_c"

    def score(self, query, rng):
        return 1.0 - query.probabilities[:, query.cls]
