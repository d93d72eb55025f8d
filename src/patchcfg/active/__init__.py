"""Active learning: which images to label next (``patchcfg query``). Pure numpy / scikit-learn.

- :func:`candidate_mask` — which rows may be picked (subsets of the label table).
- :func:`parse_strategy` — ``"high:eight"`` -> ``("high", 8)``, with did-you-mean errors.
- :func:`rank` — the top-n picks of a strategy, mixed with random exploration.
- :func:`quick_head_probabilities` — scores from cached features, without a GPU (:class:`QuickHead`:
  fitted once, scoring only the rows asked).
- :mod:`patchcfg.active.strategies` — the strategies, one file each, on a registry;
  :func:`strategy_listing` names them as written in configs (those registered since included).

Importing this package is cheap: each name is imported from its module on first use.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "BadgeSampler": "batch", "KCenterGreedy": "batch", "quick_head_probabilities": "quick_head",
    "QuickHead": "quick_head",
    "SAMPLING": "ranking", "parse_strategy": "ranking", "strategy_listing": "strategies",
    "rank": "ranking", "SUBSETS": "subsets", "candidate_mask": "subsets",
}

__all__ = ["BadgeSampler", "KCenterGreedy", "QuickHead", "SAMPLING", "SUBSETS", "candidate_mask", "parse_strategy",
           "quick_head_probabilities", "rank", "strategy_listing"]


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
