"""Which labels are likely wrong: out-of-fold quick-head probabilities, then confident learning.

1. **Out of fold.** The labelled rows are dealt into ``folds`` folds, stratified by the rows'
   labels (:func:`stratified_folds`); for each fold a :class:`~patchcfg.active.quick_head.QuickHead`
   is fitted on the other folds and scores only that fold's rows, so no row is ever scored by a
   model that saw it. A cell whose class could not be fitted without its row (its other folds hold
   one value of the class, or none) is scored by the head's prior and is not judged. The head's
   L2 strength is chosen among a few by the out-of-fold log-loss (``C="auto"``).
2. **Confident learning** (Northcutt, Jiang & Chuang, JAIR 2021, "Confident Learning: Estimating
   Uncertainty in Dataset Labels"), per class, as multi-label confident learning does: each class
   is a binary problem with the probabilities (1 - p, p), with one threshold per given label, the
   mean self-confidence of the cells given it: ``t1`` = mean p of the cells labelled 1, ``t0`` =
   mean 1 - p of the cells labelled 0. ``method="confident_joint"`` (the default): a cell is a
   **suspect** when it lies off the diagonal of the confident joint: the other label's probability
   reaches that label's threshold (p >= t1 for a 0, 1 - p >= t0 for a 1), and the given label's
   does not, or is the smaller one. ``method="prune_by_noise_rate"`` (cleanlab's default): per
   class and given label, as many cells as the calibrated confident joint counts off its diagonal,
   those of largest margin. ``method="threshold"``: every cell whose self-confidence (p for a 1,
   1 - p for a 0) is below its given label's threshold (a 1 with p < t1, a 0 with p > 1 - t0).
   In a softmax group (``exclusive``: the config's output), a row with one known 1 can only have a
   wrong 0 if its 1 is wrong: a 0 is a suspect only when the row's 1 is, and never scores above it.
3. **Ranked** by the margin, ``score = |given - p|`` (1 - self-confidence: how far p is from the
   given label), highest first.

:func:`review_labels` does the three; :meth:`LabelReview.suspects` is the ranked list of suspect
cells; :meth:`LabelReview.row_scores` (a row's worst cell) ranks rows for the labelling app's
``mistakes`` strategy; :func:`review_frame` is what ``patchcfg labels review`` writes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from patchcfg.errors import UserError

#: the columns of ``patchcfg labels review --out``, in order
COLUMNS = ("filepath", "row", "class", "given", "p", "score", "rank")
METHODS = ("confident_joint", "prune_by_noise_rate", "threshold")
#: the quick head's inverse L2 strengths tried by ``C="auto"``, in this order
C_GRID = (0.001, 0.01, 0.1, 1.0)


def stratified_folds(labels: np.ndarray, rows, folds: int = 5, seed: int = 0) -> np.ndarray:
    """The fold (0 .. k-1, k = min(folds, rows)) of each of ``rows`` (indices into ``labels``, 1 /
    0 / -1 unknown); -1 for every other row.

    Stratified by each row's rarest known positive class (the class labelled 1 in it that has the
    fewest 1s among ``rows``; rows with no known 1 form one more group): the rows of each group
    are dealt to the folds in turn, so every class's positives are spread evenly over the folds
    (exactly for the rows where it is the rarest, e.g. every digit of exclusive classes), and the
    folds differ in size by one row at most. The order within a group is shuffled by ``seed``.
    """
    labels = np.asarray(labels)
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    out = np.full(len(labels), -1, dtype=np.int64)
    if not len(rows):
        return out
    k = max(1, min(int(folds), len(rows)))
    positive = labels[rows] == 1
    counts = positive.sum(axis=0)
    rarity = np.where(positive, counts[None, :], np.iinfo(np.int64).max)
    key = np.where(positive.any(axis=1), rarity.argmin(axis=1), labels.shape[1])  # no positive: last group
    size = np.where(key < labels.shape[1], counts[np.minimum(key, labels.shape[1] - 1)], len(rows) + 1)
    shuffle = np.random.default_rng([int(seed), 7]).permutation(len(rows))
    order = np.lexsort((shuffle, key, size))  # rarest groups first, each group's rows together
    out[rows[order]] = np.arange(len(rows)) % k
    return out


def out_of_fold_probabilities(features, labels: np.ndarray, rows=None, *, folds: int = 5, seed: int = 0,
                              C: float = 1.0, exclusive=False, chunk_rows: int | None = None):
    """(probabilities, judged, fold): out-of-fold quick-head probabilities of ``rows`` (default:
    every row with a known cell), (rows of the table, classes), NaN elsewhere; ``judged``, the
    cells whose class was fitted by the fold's model (the others got the head's prior); ``fold``,
    as :func:`stratified_folds`.

    The features are standardised by the statistics of ``rows`` (no label is used for that); each
    fold's head trains on the other folds' rows and scores only its own fold's rows.
    """
    from patchcfg.active.quick_head import QuickHead
    from patchcfg.active.rows import as_row_features

    x = as_row_features(features if hasattr(features, "select") else np.asarray(features), chunk_rows)
    y = np.asarray(labels)
    if y.ndim != 2 or len(y) != len(x):
        raise ValueError(f"features {x.shape} and labels {y.shape} must share their rows")
    if rows is None:
        rows = np.flatnonzero((y >= 0).any(axis=1))
    rows = x.positions(rows)
    rows = rows[(y[rows] >= 0).any(axis=1)]  # a row with nothing known has nothing to review
    if len(rows) < 2:
        raise UserError(f"reviewing labels needs at least 2 labelled rows (got {len(rows)})")
    fold = stratified_folds(y, rows, folds, seed)
    probabilities = np.full(y.shape, np.nan)
    judged = np.zeros(y.shape, bool)
    for f in range(int(fold.max()) + 1):
        held = rows[fold[rows] == f]
        train = np.zeros(len(y), bool)
        train[rows[fold[rows] != f]] = True
        head = QuickHead.fit(x, y, train, C, seed, exclusive=exclusive is True, rows=rows, chunk_rows=chunk_rows)
        probabilities[held] = head.probabilities(held)[held]
        judged[held] = np.isnan(head.prior)[None, :]
    if exclusive is not True and exclusive:  # output groups: each softmax group's columns sum to 1
        for group in exclusive:
            columns = list(group.columns)
            if group.softmax and len(columns) > 1:
                part = probabilities[np.ix_(rows, columns)]
                probabilities[np.ix_(rows, columns)] = part / np.maximum(part.sum(axis=1, keepdims=True), 1e-12)
    return probabilities, judged, fold


def confident_learning(probabilities: np.ndarray, labels: np.ndarray, judged: np.ndarray | None = None,
                       method: str = "confident_joint", exclusive=False) -> pd.DataFrame:
    """Every judged known cell (``labels`` >= 0, ``judged``, finite p) with its per-class
    threshold and whether it is a suspect (see the module docstring); columns ``row``,
    ``class`` (index), ``given`` (0 / 1), ``p``, ``threshold`` (of its given label, as
    self-confidence), ``suspect``, ``score`` (``|given - p|``). Sorted by row, then class.

    ``exclusive`` (True: one softmax over every class; or output groups, whose softmax groups
    count): in a row whose group holds one known 1, a 0 of that group can only be wrong if the 1 is
    (the image shows one class of the group): its score is at most the 1's, and it is a suspect
    only when the 1 is (and, with prune_by_noise_rate, picked by its capped score).
    """
    if method not in METHODS:
        raise UserError(f"method must be one of {', '.join(METHODS)} (got {method!r})")
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels)
    cells = (y >= 0) & np.isfinite(p)
    if judged is not None:
        cells &= np.asarray(judged, bool)
    row, cls = np.nonzero(cells)
    given = (y[row, cls] > 0.5).astype(np.int64)
    pc = np.clip(p[row, cls], 0.0, 1.0)
    columns = y.shape[1]
    ones = np.bincount(cls, weights=given, minlength=columns)
    zeros = np.bincount(cls, weights=1 - given, minlength=columns)
    with np.errstate(invalid="ignore", divide="ignore"):
        t1 = np.bincount(cls, weights=pc * given, minlength=columns) / ones
        t0 = np.bincount(cls, weights=(1 - pc) * (1 - given), minlength=columns) / zeros
    both = (ones > 0) & (zeros > 0)  # a class known with one value only: nothing to be confused with
    confidence = np.where(given == 1, pc, 1 - pc)
    threshold = np.where(given == 1, t1[cls], t0[cls])
    other = 1 - confidence
    other_threshold = np.where(given == 1, t0[cls], t1[cls])
    # off the confident joint's diagonal: the other label reaches its threshold and wins there
    off_diagonal = (other >= other_threshold) & ((confidence < threshold) | (other > confidence))
    score = 1 - confidence
    source = _group_ones(_softmax_groups(exclusive, columns), row, cls, given, y)
    capped = source >= 0
    score[capped] = np.minimum(score[capped], score[source[capped]])
    if method == "threshold":
        suspect = confidence < threshold
    elif method == "confident_joint":
        suspect = off_diagonal.copy()
    else:
        suspect = _prune_by_noise_rate(cls, given, score, off_diagonal & both[cls], confidence >= threshold,
                                       columns)
    suspect &= both[cls]
    suspect[capped] &= suspect[source[capped]]
    suspect[source == -2] = False  # the row's 1 itself could not be judged: nor can its 0s
    return pd.DataFrame({"row": row.astype(np.int64), "class": cls.astype(np.int64), "given": given, "p": pc,
                         "threshold": threshold, "suspect": suspect, "score": score})


def _prune_by_noise_rate(cls, given, score, off_diagonal, on_diagonal, columns: int) -> np.ndarray:
    """Confident learning's ``prune_by_noise_rate``, per class: of the cells given label i, the
    calibrated count of the confident joint's off-diagonal entry (i, 1 - i) are suspects, those
    with the largest score (margin); at least one cell of each given label is kept."""
    suspect = np.zeros(len(cls), bool)
    counted = off_diagonal | on_diagonal  # cells some label is confidently there for
    for c in range(columns):
        for label in (0, 1):
            mine = np.flatnonzero((cls == c) & (given == label))
            inside = counted[mine].sum()
            if not len(mine) or not inside:
                continue
            n = int(round(off_diagonal[mine].sum() / inside * len(mine)))  # calibrated to the label's count
            n = min(n, len(mine) - 1)
            if n > 0:
                order = mine[np.lexsort((mine, -score[mine]))]
                suspect[order[:n]] = True
    return suspect


def _softmax_groups(exclusive, columns: int) -> list[list[int]]:
    """The column lists of the exclusive groups: every column for True, the softmax groups of
    output groups, none for False."""
    if exclusive is True:
        return [list(range(columns))] if columns > 1 else []
    if not exclusive:
        return []
    return [list(g.columns) for g in exclusive if g.softmax and len(g.columns) > 1]


def _group_ones(groups, row, cls, given, labels) -> np.ndarray:
    """Per judged cell: for a 0 of a softmax group in a row whose group holds one known 1, the
    position of that 1 among the judged cells (-2 when the 1 was not judged); -1 for every other cell."""
    source = np.full(len(row), -1, np.int64)
    where = np.full(labels.shape, -2, np.int64)  # cell -> its position among the judged cells
    where[row, cls] = np.arange(len(row))
    for group in groups:
        part = labels[:, group]
        single = (part == 1).sum(axis=1) == 1
        one = where[np.arange(len(labels)), np.asarray(group)[np.argmax(part == 1, axis=1)]]
        zero = np.isin(cls, group) & (given == 0) & single[row]
        source[zero] = one[row[zero]]
    return source


@dataclass
class LabelReview:
    """The result of :func:`review_labels`: ``cells`` as :func:`confident_learning` gives them,
    the out-of-fold ``probabilities`` (rows, classes; NaN where not scored), the ``folds``, the
    ``judged`` cells, the ``C`` used and the ``log_loss`` it had."""

    cells: pd.DataFrame
    probabilities: np.ndarray
    folds: np.ndarray
    judged: np.ndarray | None = None  # (rows, classes): the cells a fitted class scored (not a prior)
    C: float = 1.0  # the quick head's inverse L2 strength used
    log_loss: float = float("nan")  # of the out-of-fold probabilities on the judged known cells

    def suspects(self, n: int | None = None) -> pd.DataFrame:
        """The suspect cells, most likely wrong first (by score; ties by row, then class), with a
        ``rank`` (1 = review first); the top ``n`` when given."""
        frame = self.cells[self.cells["suspect"]]
        frame = frame.sort_values(["score", "row", "class"], ascending=[False, True, True], kind="stable")
        frame = frame.head(n) if n is not None else frame
        return frame.assign(rank=np.arange(1, len(frame) + 1, dtype=np.int64)).reset_index(drop=True)

    def row_scores(self, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """(score, suspect) per row of the table: a row's worst judged cell's score (0 for a row
        with none) and whether any of its cells is a suspect."""
        score = np.zeros(n_rows)
        suspect = np.zeros(n_rows, bool)
        rows = self.cells["row"].to_numpy()
        np.maximum.at(score, rows, self.cells["score"].to_numpy())
        suspect[rows[self.cells["suspect"].to_numpy()]] = True
        return score, suspect


def review_labels(features, labels: np.ndarray, rows=None, *, folds: int = 5, seed: int = 0, C="auto",
                  exclusive=False, method: str = "confident_joint", chunk_rows: int | None = None) -> LabelReview:
    """Out-of-fold probabilities of the labelled ``rows`` (default: every row with a known cell)
    and confident learning on them; see the module docstring.

    ``C``: the quick head's inverse L2 strength, or ``"auto"``: :data:`C_GRID` in turn on the same
    folds, from the smallest up while the out-of-fold log-loss on the judged known cells falls,
    keeping the best (labels only, no truth: noisy labels want a stronger prior than clean ones).
    ``exclusive``: True (one softmax over every class), False (multi-hot) or output groups
    (:func:`patchcfg.models.outputs.scoring_groups`): each softmax group's probabilities are
    normalised to sum to 1, and its cells judged together (:func:`confident_learning`).
    """
    if method not in METHODS:
        raise UserError(f"method must be one of {', '.join(METHODS)} (got {method!r})")
    if isinstance(folds, bool) or int(folds) < 2:
        raise UserError(f"folds must be a whole number >= 2 (got {folds!r})")
    grid = C_GRID if isinstance(C, str) and C == "auto" else (float(C),)
    best = None
    for value in grid:  # from the strongest prior up, while the log-loss falls (the cheap fits first)
        probabilities, judged, fold = out_of_fold_probabilities(features, labels, rows, folds=int(folds), seed=seed,
                                                                C=value, exclusive=exclusive, chunk_rows=chunk_rows)
        loss = log_loss(probabilities, labels, judged)
        if best is not None and not loss < best[0]:
            break
        best = (loss, value, probabilities, judged, fold)
    loss, value, probabilities, judged, fold = best
    cells = confident_learning(probabilities, labels, judged, method, exclusive)
    return LabelReview(cells, probabilities, fold, judged, value, loss)


def log_loss(probabilities: np.ndarray, labels: np.ndarray, judged: np.ndarray) -> float:
    """Mean binary log-loss of the judged known cells (inf when there is none)."""
    cells = (np.asarray(labels) >= 0) & np.asarray(judged, bool) & np.isfinite(probabilities)
    if not cells.any():
        return float("inf")
    p = np.clip(probabilities[cells], 1e-7, 1 - 1e-7)
    y = np.asarray(labels)[cells] > 0.5
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def review_frame(table, review: LabelReview, n: int | None = None) -> pd.DataFrame:
    """The suspects of ``review`` as ``patchcfg labels review`` writes them: one row per suspect
    cell with the columns of :data:`COLUMNS` (``class`` by name, ``filepath`` as in the table)."""
    frame = review.suspects(n)
    classes = np.asarray(table.classes, dtype=object)
    filepaths = table.df["filepath"].to_numpy(dtype=object)
    return pd.DataFrame({
        "filepath": filepaths[frame["row"].to_numpy()] if len(frame) else np.zeros(0, object),
        "row": frame["row"].to_numpy(np.int64),
        "class": classes[frame["class"].to_numpy()] if len(frame) else np.zeros(0, object),
        "given": frame["given"].to_numpy(np.int64),
        "p": frame["p"].to_numpy(np.float64).round(6),
        "score": frame["score"].to_numpy(np.float64).round(6),
        "rank": frame["rank"].to_numpy(np.int64),
    }, columns=list(COLUMNS))
