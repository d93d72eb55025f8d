"""``badge``: uncertain and mutually different rows, by k-means++ seeding on gradient embeddings
(Ash et al., ICLR 2020, "Deep Batch Active Learning by Diverse, Uncertain Gradient Lower Bounds");
see :class:`patchcfg.active.batch.BadgeSampler`."""

from patchcfg.active.strategies import Strategy, register


@register
class Badge(Strategy):
    name = "badge"
    needs = ("probabilities", "features")
    ranks_first = "uncertain and mutually different rows"
    sigmoid_score = "squared gradient-embedding distance to the nearest earlier pick"

    def select(self, query, k, rng):
        from patchcfg.active.batch import BadgeSampler

        sampler = BadgeSampler(k, exclusive=query.exclusive, seed=int(rng.integers(2**31)))
        sampler.fit(query.probabilities, query.features, rows=query.rows)
        return sampler.picks_, sampler.scores_, [query.label] * k, None
