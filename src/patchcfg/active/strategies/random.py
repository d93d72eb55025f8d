"""``random``: a seeded uniform random order (the baseline every other strategy must beat)."""

from patchcfg.active.strategies import Strategy, register


@register
class Random(Strategy):
    name = "random"
    needs = ()
    ranks_first = "a seeded random order"
    sigmoid_score = "a uniform draw"

    def score(self, query, rng):
        return rng.random(len(query.rows))
