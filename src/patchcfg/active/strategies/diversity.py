"""``diversity``: k-center greedy on the features (Sener & Savarese, ICLR 2018, "Active Learning for
Convolutional Neural Networks: A Core-Set Approach"): each pick is the candidate farthest from every
labelled row and every earlier pick; see :class:`patchcfg.active.batch.KCenterGreedy`."""

from patchcfg.active.strategies import Strategy, register


@register
class Diversity(Strategy):
    name = "diversity"
    needs = ("features",)
    ranks_first = "rows far from everything labelled"
    sigmoid_score = "feature distance to the nearest labelled row or earlier pick"
    softmax_score = "—"

    def select(self, query, k, rng):
        from patchcfg.active.batch import KCenterGreedy

        features, labels, rows = query.features, query.labels, query.rows
        labelled = None
        if labels is not None:
            done = (labels >= 0).any(axis=1)
            done[rows] = False
            labelled = features.select(done)
        sampler = KCenterGreedy(k, seed=int(rng.integers(2**31))).fit(features, labelled, rows=rows)
        return sampler.picks_, sampler.scores_, [query.label] * k, None
