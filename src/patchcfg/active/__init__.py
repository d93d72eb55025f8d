"""Active learning: which images to label next (``patchcfg query``). Pure numpy / scikit-learn.

- :func:`candidate_mask` — which rows may be picked (subsets of the label table).
- :func:`parse_strategy` — ``"high:eight"`` -> ``("high", 8)``, with did-you-mean errors.
- :func:`rank` — the top-n picks of a strategy, mixed with random exploration.
- :func:`quick_head_probabilities` — scores from cached features, without a GPU.
"""

from patchcfg.active.batch import BadgeSampler, KCenterGreedy
from patchcfg.active.quick_head import quick_head_probabilities
from patchcfg.active.strategies import SAMPLING, STRATEGIES, USES_FEATURES, parse_strategy, rank
from patchcfg.active.subsets import SUBSETS, candidate_mask

__all__ = ["BadgeSampler", "KCenterGreedy", "SAMPLING", "STRATEGIES", "USES_FEATURES", "SUBSETS", "candidate_mask",
           "parse_strategy", "quick_head_probabilities", "rank"]
