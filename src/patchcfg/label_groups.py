"""Label groups in numpy: the softmax groups of a label matrix resolved, so that every masked loss
and metric leaves an unresolved row alone.

A group is anything with ``softmax`` (bool) and its columns ``start:stop``, such as
:class:`patchcfg.models.outputs.OutputGroup`. A softmax group is *resolved* on a row when one of
its classes is present (the others then count as absent) or all but one are absent (the remaining
one is the answer); :func:`resolve_softmax` writes the resolved rows out in full and marks the
others unknown.

A leaf: the metrics and the output groups both build on it, and it imports neither.
"""

from __future__ import annotations

import numpy as np


def has_groups(groups) -> bool:
    """Whether the output is more than the one multi-hot sigmoid group."""
    return bool(groups) and (len(groups) > 1 or groups[0].softmax)


def resolve_softmax(labels: np.ndarray) -> np.ndarray:
    """One softmax group's labels (rows, K) in 1 / 0 / -1, resolved: a row with exactly one
    present class, or with all classes but one absent and that one not absent, becomes its
    one-hot answer in full; every other row becomes all unknown (-1)."""
    labels = np.asarray(labels, np.float32)
    present = labels > 0.5
    absent = (labels >= 0) & ~present
    k = labels.shape[1]
    one_present = present.sum(1) == 1
    by_exclusion = (present.sum(1) == 0) & (absent.sum(1) == k - 1)
    answer = np.where(one_present, np.argmax(present, 1), np.argmax(~absent, 1))
    resolved = one_present | by_exclusion
    out = np.full_like(labels, -1.0)
    out[resolved] = 0.0
    out[np.flatnonzero(resolved), answer[resolved]] = 1.0
    return out


def resolve_labels(labels: np.ndarray, groups) -> np.ndarray:
    """The label matrix (model class order) with every softmax group resolved."""
    out = np.array(labels, np.float32, copy=True)
    for g in groups:
        if g.softmax:
            out[:, g.start:g.stop] = resolve_softmax(out[:, g.start:g.stop])
    return out
