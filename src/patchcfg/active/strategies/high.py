"""``high:<c>``: the highest p_c first; on ``lacks:c`` it finds hard negatives and label errors
(patchwork's hard-negative mining). ``sampling: weighted`` draws without replacement with weights
p⁴ instead of taking the top n, so the queue is not n near-duplicates."""

import numpy as np

from patchcfg.active.strategies import Strategy, register

WEIGHT_POWER = 4  # patchwork's hard-negative sampling weights p**4


@register
class High(Strategy):
    name = "high"
    takes_class = True
    ranks_first = "the highest p_c"
    sigmoid_score = "p_c"
    softmax_score = "p_c"

    def score(self, query, rng):
        return query.probabilities[:, query.cls].astype(np.float64)

    def order(self, score, query, rng):
        if query.sampling == "weighted":
            from patchcfg.active.batch import weighted_order

            return weighted_order(score ** WEIGHT_POWER, rng)
        return super().order(score, query, rng)
