"""Which images to label next: ``rank`` one strategy over the candidate rows.

The strategies live on a registry, one file each (:mod:`patchcfg.active.strategies`: its
``strategy_listing()`` and ``feature_users()`` name them, as registered now); this module
owns what they share: parsing ``name:<class>``, the input checks, the exploration share and the
output table. ``score`` (higher = more wanted) is, per strategy: random, a uniform draw; entropy,
margin, least_confidence and maxent, the uncertainty score of :mod:`patchcfg.active.scores` in
[0, 1]; high, p_c; low, 1 - p_c; guide, the reciprocal-rank-fusion score of its signals; badge, the
squared gradient-embedding distance to the nearest earlier pick; diversity, the feature distance
to the nearest labelled row or earlier pick; typiclust, the typicality of the pick in its cluster;
probcover, how many uncovered rows the pick covers; auto, the score of the strategy in charge.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from patchcfg.active.batch import interleave, round_half_up
from patchcfg.active.names import class_index, listing, unknown
from patchcfg.active.rows import RowFeatures
from patchcfg.active.strategies import Query, get_strategy, registered
from patchcfg.errors import UserError

SAMPLING = ("top", "weighted")
COLUMNS = ("row", "rank", "score", "picked_by")


def parse_strategy(text: str, classes: Sequence[str]) -> tuple[str, int | None]:
    """``"margin"`` -> ``("margin", None)``; ``"high:eight"`` -> ``("high", classes.index("eight"))``.

    Unknown strategies and classes raise :class:`UserError` naming the closest valid one.
    """
    text = str(text).strip()
    name, sep, cls = text.partition(":")
    strategies = registered()
    plain = tuple(s.name for s in strategies if not s.takes_class)
    with_class = tuple(s.name for s in strategies if s.takes_class)
    shown = tuple(s.shown for s in strategies)
    if not sep:
        if name in plain:
            return name, None
        if name in with_class:
            raise UserError(f"strategy '{name}' needs a class: '{name}:<class>' "
                            f"(classes: {listing(classes)})")
        raise unknown("strategy", text, plain + tuple(f"{s}:" for s in with_class), shown=shown)
    if name in plain:
        hint = f"; for one class's entropy use 'maxent:{cls}'" if name == "entropy" else ""
        raise UserError(f"strategy '{name}' takes no class (got '{text}'){hint}")
    if name not in with_class:
        raise unknown("strategy", f"{name}:", [f"{s}:" for s in with_class] + list(plain), text, shown=shown)
    if not cls:
        raise UserError(f"strategy '{text}' needs a class after the colon (classes: {listing(classes)})")
    return name, class_index(cls, classes, text)


def rank(strategy: str, *, probabilities: np.ndarray | None, features: np.ndarray | None,
         classes: Sequence[str], candidates: np.ndarray, n: int, labels: np.ndarray | None = None,
         explore: float = 0.0, sampling: str = "top", mix: float = 0.0, exclusive: bool = False,
         seed: int = 0, schedule: dict | None = None) -> pd.DataFrame:
    """Rank the candidate rows for labelling; returns the top ``n`` as a DataFrame.

    Arguments (all arrays are over the rows of the label table):

    - ``probabilities``: (rows, classes) model outputs, sigmoid (multi-hot) or, with
      ``exclusive=True``, softmax over mutually exclusive classes; ``None`` if not scored.
    - ``features``: (rows, dims) penultimate / encoder features, an array or a
      :class:`~patchcfg.active.rows.RowFeatures` (a memory map seen through an index, read in
      blocks); ``None`` if not embedded.
    - ``candidates``: (rows,) bool, the rows that may be picked (see :func:`candidate_mask`).
    - ``labels``: (rows, classes) label matrix, 1 / 0 / -1 unknown; guide searches from its known
      positives, diversity starts from its labelled rows that are not candidates.
    - ``explore``: fraction of the picks, round(explore · n) rounded half up, drawn uniformly from
      the candidates the strategy did not pick (picked_by ``"explore"``); they are spread evenly
      through the ranking. Exactly ``min(n, candidates)`` distinct rows come back.
    - ``sampling``: high/low only: ``"top"`` takes the top n; ``"weighted"`` draws without
      replacement with weights p⁴ (low: (1 - p)⁴), patchwork's hard-negative mining.
    - ``mix``: guide only: fraction of its picks taken by entropy instead (picked_by ``"entropy"``).
    - ``seed``: every random choice (random, explore, weighted, badge, diversity, typiclust,
      probcover) follows it.
    - ``schedule``: auto: ``cold_start``, ``then``, ``handover``, ``handover_per_class`` (the
      query section's keys; missing ones take the schema's defaults, see :func:`auto_schedule`) and
      ``train``, a (rows,) bool mask of the rows the model trains on (default: all): their labels
      count toward the handover, and only theirs make a region covered for the cold-start
      strategies (the only key the others read).

    Columns: ``row`` (index into the table), ``rank`` (1 = label first), ``score`` (higher = more
    wanted; see the module docstring; for explore picks the strategy's score of that row where
    the strategy scores rows one by one, else NaN), ``picked_by``.
    """
    name, cls = parse_strategy(strategy, classes)
    label = f"{name}:{classes[cls]}" if cls is not None else name
    candidates, probabilities, features, labels = _check_inputs(
        label, candidates, probabilities, features, labels, len(classes), exclusive)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise UserError(f"n must be a whole number >= 1 (got {n!r})")
    for key, value in (("explore", explore), ("mix", mix)):
        if not 0.0 <= float(value) <= 1.0:
            raise UserError(f"{key} must lie between 0 and 1 (got {value!r})")
    if sampling not in SAMPLING:
        raise unknown("sampling", str(sampling), SAMPLING)
    strategy = get_strategy(name)
    strategy.check(label, probabilities, features, float(mix))
    if name == "auto":
        schedule = auto_schedule(schedule, classes)
    else:  # the rows the model trains on: a cold-start strategy counts no validation label as covered
        schedule = {"train": schedule.get("train")} if schedule else None

    rows = np.flatnonzero(candidates)
    total = min(int(n), len(rows))
    n_explore = min(round_half_up(float(explore) * int(n)), total)
    rng = np.random.default_rng([int(seed), 0])
    query = Query(label=label, cls=cls, rows=rows,
                  probabilities=probabilities[rows] if probabilities is not None else None,
                  features=features, labels=labels, sampling=sampling, mix=float(mix), exclusive=exclusive,
                  schedule=schedule)
    picks, picked_scores, picked_by, pointwise = strategy.select(query, total - n_explore, rng)

    explore_rng = np.random.default_rng([int(seed), 1])
    rest = np.setdiff1d(np.arange(len(rows)), picks)
    extra = explore_rng.choice(rest, size=n_explore, replace=False) if n_explore else np.zeros(0, int)
    extra_scores = pointwise[extra] if pointwise is not None else np.full(len(extra), np.nan)
    order = interleave(len(picks), len(extra))
    local = np.concatenate([picks, extra]).astype(np.int64)[order]
    return pd.DataFrame({
        "row": rows[local].astype(np.int64),
        "rank": np.arange(1, len(local) + 1, dtype=np.int64),
        "score": np.concatenate([picked_scores, extra_scores]).astype(np.float64)[order],
        "picked_by": np.asarray(list(picked_by) + ["explore"] * len(extra), dtype=object)[order],
    }, columns=list(COLUMNS))


#: the query section's keys that make ``auto``'s schedule
SCHEDULE_KEYS = ("cold_start", "then", "handover", "handover_per_class")


def auto_schedule(schedule: dict | None, classes: Sequence[str]) -> dict:
    """``auto``'s schedule: the given keys of the query section, the schema's defaults for the rest;
    ``cold_start`` and ``then`` must be other strategies (either may take a class: ``high:cat``),
    kept parsed under ``parsed``: name -> (strategy, class index or None)."""
    from patchcfg.config import with_defaults

    defaults = with_defaults("query", {})
    out = {key: (schedule or {}).get(key, defaults[key]) for key in SCHEDULE_KEYS}
    out["parsed"] = {}
    for key in ("cold_start", "then"):
        out[key] = str(out[key]).strip()
        name, cls = parse_strategy(out[key], classes)
        if name == "auto":
            raise UserError(f"query.{key}: auto cannot hand over to itself; name another strategy")
        out["parsed"][out[key]] = (name, cls)
    out["parsed"]["random"] = ("random", None)
    out["train"] = (schedule or {}).get("train")
    return out


def _check_inputs(label, candidates, probabilities, features, labels, n_classes, exclusive):
    candidates = np.asarray(candidates)
    if candidates.ndim != 1 or candidates.dtype != bool:
        raise UserError(f"candidates must be a 1-d bool mask over the rows (got {candidates.dtype} "
                        f"{candidates.shape})")
    rows = len(candidates)

    def check(array, what, width=None):
        if array is None:
            return None
        array = np.asarray(array)
        if array.ndim != 2 or array.shape[0] != rows or (width is not None and array.shape[1] != width):
            expected = f"({rows}, {width if width is not None else 'dims'})"
            raise UserError(f"{what} have shape {array.shape} but the label table needs {expected}: "
                            f"{rows} rows" + (f", {width} classes" if width is not None else "")
                            + "; were they computed from an older version of the table?")
        if not np.issubdtype(array.dtype, np.number):
            raise UserError(f"{what} must be numbers (got {array.dtype})")
        if not np.isfinite(array).all():
            bad = int(np.argwhere(~np.isfinite(array))[0][0])
            raise UserError(f"{what} are not finite on row {bad}")
        return array

    probabilities = check(probabilities, "probabilities", n_classes)
    labels = check(labels, "labels", n_classes)
    features = _check_features(features, rows, candidates, labels)
    if probabilities is not None and (probabilities.min(initial=0) < -1e-6 or probabilities.max(initial=1) > 1 + 1e-6):
        raise UserError("probabilities must lie in [0, 1]; pass sigmoid or softmax outputs, not logits")
    if probabilities is not None:
        probabilities = np.clip(probabilities.astype(np.float64), 0.0, 1.0)
    if exclusive and n_classes < 2:
        raise UserError(f"{label}: exclusive (softmax) outputs need at least two classes")
    return candidates, probabilities, features, labels


def _check_features(features, rows, candidates, labels):
    """Features as :class:`RowFeatures` (an array, or a memory map seen through an index); the
    rows a strategy may read (candidates and labelled rows) must have finite features."""
    if features is None:
        return None
    if not isinstance(features, RowFeatures):
        array = np.asarray(features)
        if array.ndim != 2:
            raise UserError(f"features have shape {array.shape} but the label table needs ({rows}, dims): "
                            f"{rows} rows; were they computed from an older version of the table?")
        if not np.issubdtype(array.dtype, np.number):
            raise UserError(f"features must be numbers (got {array.dtype})")
        features = RowFeatures(array)
    if features.shape[0] != rows:
        raise UserError(f"features have shape {features.shape} but the label table needs ({rows}, dims): "
                        f"{rows} rows; were they computed from an older version of the table?")
    if not np.issubdtype(features.base.dtype, np.number):
        raise UserError(f"features must be numbers (got {features.base.dtype})")
    used = candidates.copy()
    if labels is not None:
        used |= (labels >= 0).any(axis=1)
    bad = features.select(used).first_non_finite()
    if bad is not None:
        raise UserError(f"features are not finite on row {bad}")
    return features
