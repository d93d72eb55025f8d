"""Which images to label next: ``rank`` one strategy over the candidate rows.

=====================  =================================================  ======================
strategy               ranks first                                        needs
=====================  =================================================  ======================
``random``             a uniform random order                             nothing
``entropy``            the most uncertain rows (see :mod:`.scores`)       probabilities
``maxent:<c>``         rows whose class c is closest to 0.5               probabilities
``margin``             the smallest gap between the top two answers       probabilities
``least_confidence``   the least likely most-likely labelling             probabilities
``high:<c>``           the highest p_c (hard negatives in ``lacks:c``)    probabilities
``low:<c>``            the lowest p_c (hard positives in ``contains:c``)  probabilities
``guide:<c>``          likely positives of a rare class c                 probabilities and/or
                                                                          features + labels
``badge``              uncertain and diverse rows (gradient embeddings)   probabilities, features
``diversity``          rows far from everything labelled (core-set)       features (+ labels)
=====================  =================================================  ======================

``score`` (higher = more wanted) is, per strategy: random, a uniform draw; entropy, margin,
least_confidence and maxent, the uncertainty score of :mod:`patchcfg.active.scores` in [0, 1];
high, p_c; low, 1 - p_c; guide, the reciprocal-rank-fusion score of its signals; badge, the
squared gradient-embedding distance to the nearest earlier pick; diversity, the feature distance
to the nearest labelled row or earlier pick.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from patchcfg.active import scores as uncertainty
from patchcfg.active._names import class_index, listing, unknown
from patchcfg.active.batch import (
    BadgeSampler,
    KCenterGreedy,
    nearest_positive_similarity,
    reciprocal_rank_fusion,
    weighted_order,
)
from patchcfg.errors import UserError

PLAIN_STRATEGIES = ("random", "entropy", "margin", "least_confidence", "badge", "diversity")
CLASS_STRATEGIES = ("maxent", "high", "low", "guide")
STRATEGIES = PLAIN_STRATEGIES + tuple(f"{s}:<class>" for s in CLASS_STRATEGIES)
SAMPLING = ("top", "weighted")
COLUMNS = ("row", "rank", "score", "picked_by")
WEIGHT_POWER = 4  # patchwork's hard-negative sampling weights p**4
#: Strategies that use features (required for badge and diversity, used when present by guide).
USES_FEATURES = ("badge", "diversity", "guide")
_NEEDS = {"random": (), "badge": ("probabilities", "features"), "diversity": ("features",)}
_HINT = {"features": "run `patchcfg embed` first to cache features",
         "probabilities": "score the images first (the fine-tuned model, or the quick head on cached features)"}


def parse_strategy(text: str, classes: Sequence[str]) -> tuple[str, int | None]:
    """``"margin"`` -> ``("margin", None)``; ``"high:eight"`` -> ``("high", classes.index("eight"))``.

    Unknown strategies and classes raise :class:`UserError` naming the closest valid one.
    """
    text = str(text).strip()
    name, sep, cls = text.partition(":")
    shown = STRATEGIES
    if not sep:
        if name in PLAIN_STRATEGIES:
            return name, None
        if name in CLASS_STRATEGIES:
            raise UserError(f"strategy '{name}' needs a class: '{name}:<class>' (classes: {listing(classes)})")
        raise unknown("strategy", text, PLAIN_STRATEGIES + tuple(f"{s}:" for s in CLASS_STRATEGIES), shown=shown)
    if name in PLAIN_STRATEGIES:
        hint = f"; for one class's entropy use 'maxent:{cls}'" if name == "entropy" else ""
        raise UserError(f"strategy '{name}' takes no class (got '{text}'){hint}")
    if name not in CLASS_STRATEGIES:
        raise unknown("strategy", f"{name}:", [f"{s}:" for s in CLASS_STRATEGIES] + list(PLAIN_STRATEGIES),
                      text, shown=shown)
    if not cls:
        raise UserError(f"strategy '{text}' needs a class after the colon (classes: {listing(classes)})")
    return name, class_index(cls, classes, text)


def rank(strategy: str, *, probabilities: np.ndarray | None, features: np.ndarray | None,
         classes: Sequence[str], candidates: np.ndarray, n: int, labels: np.ndarray | None = None,
         explore: float = 0.0, sampling: str = "top", mix: float = 0.0, exclusive: bool = False,
         seed: int = 0) -> pd.DataFrame:
    """Rank the candidate rows for labelling; returns the top ``n`` as a DataFrame.

    Arguments (all arrays are over the rows of the label table):

    - ``probabilities``: (rows, classes) model outputs, sigmoid (multi-hot) or, with
      ``exclusive=True``, softmax over mutually exclusive classes; ``None`` if not scored.
    - ``features``: (rows, dims) penultimate / encoder features; ``None`` if not embedded.
    - ``candidates``: (rows,) bool, the rows that may be picked (see :func:`candidate_mask`).
    - ``labels``: (rows, classes) label matrix, 1 / 0 / -1 unknown; guide searches from its known
      positives, diversity starts from its labelled rows that are not candidates.
    - ``explore``: fraction of the picks, round(explore · n) rounded half up, drawn uniformly from
      the candidates the strategy did not pick (picked_by ``"explore"``); they are spread evenly
      through the ranking. Exactly ``min(n, candidates)`` distinct rows come back.
    - ``sampling``: high/low only: ``"top"`` takes the top n; ``"weighted"`` draws without
      replacement with weights p⁴ (low: (1 - p)⁴), patchwork's hard-negative mining.
    - ``mix``: guide only: fraction of its picks taken by entropy instead (picked_by ``"entropy"``).
    - ``seed``: every random choice (random, explore, weighted, badge, diversity) follows it.

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
    _check_needs(name, label, probabilities, features, labels, cls, mix)

    rows = np.flatnonzero(candidates)
    total = min(int(n), len(rows))
    n_explore = min(_round_half_up(float(explore) * int(n)), total)
    rng = np.random.default_rng([int(seed), 0])
    picks, picked_scores, picked_by, pointwise = _select(
        name, cls, label, rows, total - n_explore, probabilities, features, labels,
        sampling, float(mix), exclusive, rng)

    explore_rng = np.random.default_rng([int(seed), 1])
    rest = np.setdiff1d(np.arange(len(rows)), picks)
    extra = explore_rng.choice(rest, size=n_explore, replace=False) if n_explore else np.zeros(0, int)
    extra_scores = pointwise[extra] if pointwise is not None else np.full(len(extra), np.nan)
    order = _interleave(len(picks), len(extra))
    local = np.concatenate([picks, extra]).astype(np.int64)[order]
    return pd.DataFrame({
        "row": rows[local].astype(np.int64),
        "rank": np.arange(1, len(local) + 1, dtype=np.int64),
        "score": np.concatenate([picked_scores, extra_scores]).astype(np.float64)[order],
        "picked_by": np.asarray(list(picked_by) + ["explore"] * len(extra), dtype=object)[order],
    }, columns=list(COLUMNS))


def _select(name, cls, label, rows, k, probabilities, features, labels, sampling, mix, exclusive, rng):
    """The strategy's own ``k`` picks: (local indices into rows, scores, picked_by, pointwise | None)."""
    p = probabilities[rows] if probabilities is not None else None
    if name == "badge":
        sampler = BadgeSampler(k, exclusive=exclusive, seed=int(rng.integers(2**31))).fit(p, features[rows])
        return sampler.picks_, sampler.scores_, [label] * k, None
    if name == "diversity":
        labelled = None
        if labels is not None:
            done = (labels >= 0).any(axis=1) & ~np.isin(np.arange(len(labels)), rows)
            labelled = features[done]
        sampler = KCenterGreedy(k, seed=int(rng.integers(2**31))).fit(features[rows], labelled)
        return sampler.picks_, sampler.scores_, [label] * k, None
    if name == "random":
        score = rng.random(len(rows))
        order = np.argsort(-score, kind="stable")
    elif name in uncertainty.UNCERTAINTY:
        score = uncertainty.UNCERTAINTY[name](p, exclusive)
        order = np.argsort(-score, kind="stable")
    elif name == "maxent":
        score = uncertainty.binary_entropy(p[:, cls])
        order = np.argsort(-score, kind="stable")
    elif name in ("high", "low"):
        score = p[:, cls].astype(np.float64) if name == "high" else 1.0 - p[:, cls]
        if sampling == "weighted":
            order = weighted_order(score ** WEIGHT_POWER, rng)
        else:
            order = np.argsort(-score, kind="stable")
    else:  # guide
        return _guide(cls, label, rows, k, p, features, labels, mix, exclusive)
    picks = order[:k]
    return picks, score[picks], [label] * k, score


def _guide(cls, label, rows, k, p, features, labels, mix, exclusive):
    """GUIDE (Attenberg & Provost, KDD 2010, "Why label when you can search?"): under extreme class
    imbalance, look for likely members of the rare class instead of labelling uncertain rows.
    Signals: the predicted probability p_c, and the cosine similarity (on features) to the nearest
    known positive of c; fused by reciprocal rank. A fraction ``mix`` of the picks is taken by
    entropy instead (the paper's mix of search and uncertainty sampling)."""
    signals = []
    if p is not None:
        signals.append(p[:, cls])
    if features is not None and labels is not None:
        positives = labels[:, cls] == 1
        if positives.any():
            signals.append(nearest_positive_similarity(features[rows], features[positives]))
    if not signals:
        raise UserError(f"{label} has nothing to search with: no probabilities, and no known positives of "
                        f"'{label.split(':', 1)[1]}' to search near in feature space; label a few positives "
                        "or score the images first")
    fused = reciprocal_rank_fusion(signals)
    n_mix = _round_half_up(mix * k)
    search = np.argsort(-fused, kind="stable")[:k - n_mix]
    if not n_mix:
        return search, fused[search], [label] * len(search), fused
    ent = uncertainty.entropy(p, exclusive)
    ent_order = np.argsort(-ent, kind="stable")
    extra = ent_order[~np.isin(ent_order, search)][:n_mix]
    order = _interleave(len(search), len(extra))
    picks = np.concatenate([search, extra])[order]
    scores = np.concatenate([fused[search], ent[extra]])[order]
    by = np.asarray([label] * len(search) + ["entropy"] * len(extra), dtype=object)[order]
    return picks, scores, list(by), fused


def _interleave(a: int, b: int) -> np.ndarray:
    """Positions merging a primary list of length a with a secondary one of length b, the secondary
    spread evenly (item j of b at about (j + 1) / (b + 1) of the way through)."""
    keys = np.concatenate([(np.arange(a) + 1) / (a + 1), (np.arange(b) + 1) / (b + 1)])
    tiebreak = np.concatenate([np.zeros(a), np.ones(b)])
    return np.lexsort((tiebreak, keys))


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5 + 1e-9))


def _check_needs(name, label, probabilities, features, labels, cls, mix):
    if name == "guide":
        if mix > 0 and probabilities is None:
            raise UserError(f"{label} with mix > 0 needs probabilities for its entropy picks; "
                            f"{_HINT['probabilities']}, or set mix to 0")
        if probabilities is None and features is None:
            raise UserError(f"{label} needs probabilities or features (with known positives); "
                            f"{_HINT['features']}, or {_HINT['probabilities']}")
        return
    needs = _NEEDS.get(name, ("probabilities",))
    given = {"probabilities": probabilities, "features": features}
    missing = [k for k in needs if given[k] is None]
    if missing:
        raise UserError(f"{label} needs {' and '.join(needs)} (missing: {', '.join(missing)}); "
                        + "; ".join(_HINT[m] for m in missing))


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
    features = check(features, "features")
    labels = check(labels, "labels", n_classes)
    if probabilities is not None and (probabilities.min(initial=0) < -1e-6 or probabilities.max(initial=1) > 1 + 1e-6):
        raise UserError("probabilities must lie in [0, 1]; pass sigmoid or softmax outputs, not logits")
    if probabilities is not None:
        probabilities = np.clip(probabilities.astype(np.float64), 0.0, 1.0)
    if exclusive and n_classes < 2:
        raise UserError(f"{label}: exclusive (softmax) outputs need at least two classes")
    return candidates, probabilities, features, labels
