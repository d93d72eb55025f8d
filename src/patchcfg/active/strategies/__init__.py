"""Query strategies on a registry: one file per strategy, each a small class registered by name.

A strategy declares its ``name``, whether it ``takes_class`` (``high:<class>``), what it ``needs``
(``probabilities``, ``features``), whether it ``uses_features`` or ``uses_probabilities`` when given (a
query scores every candidate only for a strategy that needs or uses probabilities), one line for each column
of the strategy table (docs/active-learning.md), and how it picks: pointwise strategies give a ``score``
per candidate row (higher = label first) and the base class takes the top k; batch strategies (badge, diversity,
guide) override ``select``. :func:`patchcfg.active.rank` owns what every strategy shares: input
checks, the exploration share, the output table. The schema pattern of ``query.strategy``, the
CLI help of ``patchcfg query --strategy`` and the strategy table of the docs are generated from here.

Importing this package is cheap (numpy only). Adding a strategy is one file::

    # src/patchcfg/active/strategies/coinflip.py
    from patchcfg.active.strategies import Strategy, register

    @register
    class CoinFlip(Strategy):
        name = "coinflip"
        needs = ()
        ranks_first = "heads before tails"

        def score(self, query, rng):
            return rng.integers(0, 2, len(query.rows)).astype(float)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from patchcfg.registries import Registry

#: Where the built-in strategies stand in listings (plain ones first, then those taking a class);
#: strategies not named here follow, by name.
LISTED = ("auto", "random", "entropy", "margin", "least_confidence", "badge", "diversity", "typiclust",
          "probcover", "mistakes", "maxent", "high", "low", "guide")
HINTS = {"features": "run `patchcfg embed` first to cache features",
         "probabilities": "score the images first (the fine-tuned model, or the quick head on cached "
                          "features)"}


@dataclass
class Query:
    """What a strategy ranks: the candidate ``rows`` (indices into the label table) and its inputs.

    ``probabilities`` are those of the candidate rows (rows, classes) or None; ``features`` (a
    :class:`~patchcfg.active.rows.RowFeatures`: read it in blocks, or ``take`` a few rows) and
    ``labels`` (1 / 0 / -1 unknown) cover every row of the table, or are None. ``cls`` is the class
    index of ``high:<class>``-style strategies; ``label`` is the strategy as shown (``high:cat``).
    """

    label: str
    cls: int | None
    rows: np.ndarray
    probabilities: np.ndarray | None
    features: Any | None
    labels: np.ndarray | None
    sampling: str = "top"
    mix: float = 0.0
    exclusive: bool = False
    #: ``auto``'s schedule: ``cold_start``, ``then``, ``handover``, ``handover_per_class``
    schedule: dict | None = None


class Strategy:
    """Base of every query strategy; a subclass sets the class attributes and ``score`` or ``select``."""

    name: str = ""
    takes_class: bool = False
    needs: tuple[str, ...] = ("probabilities",)
    uses_features: bool = False  # features are loaded for it when present (implied by needing them)
    uses_probabilities: bool = False  # every candidate is scored for it when it can be (implied by needing them)
    ranks_first: str = ""  # what comes first, one line
    sigmoid_score: str = ""  # its score for sigmoid (multi-hot) probabilities
    softmax_score: str = "same"  # ... and for softmax (exclusive) ones
    needs_text: str = ""  # what it needs, in words (default: ``needs``)

    @property
    def shown(self) -> str:
        """The name as written in configs: ``entropy``, ``high:<class>``."""
        return f"{self.name}:<class>" if self.takes_class else self.name

    def check(self, label: str, probabilities, features, mix: float) -> None:
        """Raise :class:`~patchcfg.errors.UserError` when an input the strategy needs is missing."""
        from patchcfg.errors import UserError

        given = {"probabilities": probabilities, "features": features}
        missing = [k for k in self.needs if given[k] is None]
        if missing:
            raise UserError(f"{label} needs {' and '.join(self.needs)} (missing: {', '.join(missing)}); "
                            + "; ".join(HINTS[m] for m in missing))

    def score(self, query: Query, rng: np.random.Generator) -> np.ndarray:
        """Pointwise strategies: one score per candidate row, higher = label first."""
        raise NotImplementedError(f"strategy {self.name!r} defines neither score nor select")

    def order(self, score: np.ndarray, query: Query, rng: np.random.Generator) -> np.ndarray:
        """Candidate positions in the order they are picked (default: by score, highest first)."""
        return np.argsort(-score, kind="stable")

    def select(self, query: Query, k: int, rng: np.random.Generator):
        """The strategy's own ``k`` picks: (positions in ``query.rows``, their scores, picked_by,
        every candidate's score or None when the strategy does not score rows one by one)."""
        score = self.score(query, rng)
        picks = self.order(score, query, rng)[:k]
        return picks, score[picks], [query.label] * k, score


def _listing_order(name: str, cls: type[Strategy]):
    return cls.takes_class, LISTED.index(name) if name in LISTED else len(LISTED), name


def _check_name(name: str, cls: type[Strategy]) -> None:
    if not name or ":" in name:
        raise ValueError(f"{cls.__name__}: a strategy needs a name without ':'")


#: Every strategy class by name (each module of this package, and every one registered since), in
#: listing order: plain ones first, then those taking a class.
STRATEGY_CLASSES = Registry("strategy", __name__, order=_listing_order, on_register=_check_name,
                            schema=("query.schema.json", f"{__name__}:query_schema"))


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make ``cls`` the strategy ``cls.name``."""
    return STRATEGY_CLASSES.add(cls.name, cls, stacklevel=2)


#: Remove the strategy ``name`` (one registered from outside this package, e.g. in a test).
unregister = STRATEGY_CLASSES.unregister


def registered() -> list[Strategy]:
    """Every strategy (an instance of each), in listing order: plain ones first, then class ones."""
    return [cls() for cls in STRATEGY_CLASSES.values()]


def get_strategy(name: str) -> Strategy | None:
    """The strategy registered as ``name`` (no ``:<class>``), or None."""
    return STRATEGY_CLASSES[name]() if name in STRATEGY_CLASSES else None


def strategy_listing() -> tuple[str, ...]:
    """``("random", ..., "maxent:<class>", ...)``: every strategy as written in configs, the ones
    registered since included (the labelling page's list)."""
    return tuple(s.shown for s in registered())


def probability_users() -> tuple[str, ...]:
    """Names of the strategies that use every candidate's probabilities (required, or used when present)."""
    return tuple(s.name for s in registered() if s.uses_probabilities or "probabilities" in s.needs)


def feature_users() -> tuple[str, ...]:
    """Names of the strategies that use features (required, or used when present)."""
    return tuple(s.name for s in registered() if s.uses_features or "features" in s.needs)


# --------------------------------------------------------------------------- generated text


def cli_help() -> str:
    """The help of ``patchcfg query --strategy``."""
    return "One of: " + ", ".join(s.shown.replace("<class>", "CLASS") for s in registered()) + "."


def schema_property(current: dict) -> dict:
    """The ``query.strategy`` property of query.schema.json: ``current`` with its description,
    pattern, message and examples generated from the registry (its default kept)."""
    strategies = registered()
    plain = [s.name for s in strategies if not s.takes_class]
    with_class = [s.name for s in strategies if s.takes_class]
    described = "; ".join(f"{s.shown} ({s.ranks_first})" for s in strategies)
    prop: dict[str, Any] = {
        "description": f"Which rows to label first: {described}.",
        "type": "string",
        "pattern": f"^({'|'.join(plain)}|({'|'.join(with_class)}):.+)$",
        "x-message": (f"must be {', '.join(plain)}, or {'/'.join(f'{n}:' for n in with_class)} "
                      "followed by a class name"),
    }
    if "default" in current:
        prop["default"] = current["default"]
    prop["examples"] = plain + [f"{n}:nine" for n in with_class]
    return prop


def query_schema(schema: dict) -> dict:
    """query.schema.json's contents with its ``strategy`` property written from the registry."""
    properties = dict(schema["properties"], strategy=schema_property(schema["properties"]["strategy"]))
    return dict(schema, properties=properties)


def reference_markdown() -> str:
    """The strategy table of the active learning page (docs/active-learning.md)."""
    lines = ["| strategy | ranks first | sigmoid score | softmax score | needs |",
             "| --- | --- | --- | --- | --- |"]
    for s in registered():
        shown = s.shown.replace("<class>", "<c>")
        needs = s.needs_text or (" and ".join(s.needs) if s.needs else "nothing")
        cells = [f"`{shown}`", s.ranks_first, s.sigmoid_score, s.softmax_score, needs]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)

