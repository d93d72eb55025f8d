"""Which rows of the label table are candidates for labelling (patchwork's subsets).

======================  ===================================================================
``unlabeled``           no class known; not excluded, not validation (the pool)
``partial``             some but not all classes known; not excluded
``labeled``             every class known; not excluded
``excluded``            ``exclude`` is True
``validation``          ``validation`` is True; not excluded
``all``                 every row that is not excluded
``contains:<class>``    the class is 1; not excluded
``lacks:<class>``       the class is 0; not excluded
``unlabeled:<class>``   the class is unknown (other classes may be known); not excluded
``subset:<name>``       the ``subset`` column equals ``name``; not excluded
======================  ===================================================================

Excluded rows ("seen, kept out of training") are candidates only for ``excluded``.

A strategy that reviews labels (``mistakes``: its ``reviews_labels``) ranks rows with a known cell:
given its name, the candidates are the subset's rows with a known cell, and for the pool
``unlabeled`` (the default, which holds none) every labelled row that is not excluded.
"""

from __future__ import annotations

import numpy as np

from patchcfg.active.names import class_index, unknown
from patchcfg.errors import UserError

PLAIN_SUBSETS = ("unlabeled", "partial", "labeled", "excluded", "validation", "all")
CLASS_SUBSETS = ("contains", "lacks", "unlabeled")
SUBSETS = PLAIN_SUBSETS + tuple(f"{p}:<class>" for p in CLASS_SUBSETS) + ("subset:<name>",)


def candidate_mask(table, subset: str = "unlabeled", strategy: str | None = None) -> np.ndarray:
    """Boolean mask over the rows of ``table`` (a :class:`patchcfg.label_table.LabelTable`) for ``subset``
    (for ``strategy``, a strategy name without ``:<class>``, when it reviews labels: see the module).

    Unknown subset names, classes or ``subset`` values raise :class:`UserError` with the closest
    valid name and the list of valid ones.

    >>> candidate_mask(table, "unlabeled:nine")  # doctest: +SKIP
    array([ True, False, ...])
    """
    subset = str(subset).strip()
    if strategy is not None and _reviews_labels(strategy):
        labelled = (table.label_matrix() >= 0).any(axis=1) & ~table.exclude
        return labelled if subset == "unlabeled" else candidate_mask(table, subset) & labelled
    labels = table.label_matrix()
    known = labels >= 0
    keep = ~table.exclude
    if subset in PLAIN_SUBSETS:
        if subset == "unlabeled":
            return ~known.any(axis=1) & keep & ~table.validation
        if subset == "partial":
            return known.any(axis=1) & ~known.all(axis=1) & keep
        if subset == "labeled":
            return known.all(axis=1) & keep if labels.shape[1] else np.zeros(len(table), bool)
        if subset == "excluded":
            return table.exclude.copy()
        if subset == "validation":
            return table.validation & keep
        return keep.copy()
    prefix, sep, name = subset.partition(":")
    if not sep or not name:
        raise unknown("subset", subset, list(PLAIN_SUBSETS) + [f"{p}:" for p in CLASS_SUBSETS + ("subset",)],
                      shown=SUBSETS)
    if prefix == "subset":
        values = table.subsets()
        if "subset" not in table.df.columns:
            raise UserError(f"subset '{subset}': the label table has no 'subset' column")
        if name not in set(values):
            raise unknown("subset value", name, sorted(set(values) - {""}), subset)
        return (values == name) & keep
    if prefix not in CLASS_SUBSETS:
        raise unknown("subset", f"{prefix}:", [f"{p}:" for p in CLASS_SUBSETS + ("subset",)], subset,
                      shown=SUBSETS)
    column = labels[:, class_index(name, table.classes, subset)]
    value = {"contains": 1, "lacks": 0, "unlabeled": -1}[prefix]
    return (column == value) & keep


def _reviews_labels(strategy: str) -> bool:
    from patchcfg.active.strategies import get_strategy

    found = get_strategy(str(strategy).partition(":")[0].strip())
    return bool(getattr(found, "reviews_labels", False))
