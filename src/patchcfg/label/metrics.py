"""How the labelling app measures a model on the validation rows, and when it stops refitting.

Every fit is measured by :func:`validation_metrics` (``val_macro_auc``, ``val_accuracy`` and
``val_auc_<class>``); ``label.stop_when`` names thresholds on them (:func:`check_stop_when`), and
automatic refits stop once every one holds (:func:`stop_holds`).
"""

from __future__ import annotations

import numpy as np

from patchcfg.errors import UserError

METRICS = ("val_macro_auc", "val_accuracy")
#: Per class, the learner also logs ``val_auc_<class>``.
CLASS_METRIC = "val_auc_"
#: Fewer validation labels than this of a class (present or absent) and its AUC is not worth much.
MIN_VALIDATION = 5


def check_stop_when(stop_when: dict, classes=None) -> None:
    """Every key must be a metric the learner logs: ``val_macro_auc``, ``val_accuracy`` or
    ``val_auc_<class>`` (a class of the table, when ``classes`` is given)."""
    for key in stop_when:
        if key in METRICS:
            continue
        cls = key[len(CLASS_METRIC):] if key.startswith(CLASS_METRIC) else None
        if cls and (classes is None or cls in classes):
            continue
        per_class = f", {CLASS_METRIC}<class>" + (f" (classes: {', '.join(classes)})" if classes else "")
        raise UserError(f"label.stop_when: unknown metric '{key}'; the app measures "
                        f"{', '.join(METRICS)}{per_class}")


def stop_holds(stop_when: dict, metrics: dict) -> bool:
    """True when every threshold of ``stop_when`` holds (a metric not measured does not hold)."""
    return bool(stop_when) and all(metrics.get(k) is not None and metrics[k] >= v
                                   for k, v in stop_when.items())


def validation_metrics(probabilities: np.ndarray, labels: np.ndarray, rows: np.ndarray,
                       classes=None, exclusive: bool = False) -> dict:
    """Scores of ``probabilities`` on the validation ``rows``.

    ``val_auc_<class>`` for each class with both values known among ``rows``; ``val_macro_auc``
    their mean; ``val_accuracy``: with exclusive classes, the share of rows with one known present
    class whose highest probability is that class; otherwise the share of known cells on the right
    side of 0.5. ``None`` where nothing can be measured.
    """
    from sklearn.metrics import roc_auc_score

    classes = list(classes) if classes is not None else [str(c) for c in range(labels.shape[1])]
    out, aucs, right, known_cells = {}, [], 0, 0
    for c, name in enumerate(classes):
        known = rows & (labels[:, c] >= 0)
        y = labels[known, c]
        auc = None
        if known.any():
            p = probabilities[known, c]
            right += int(((p >= 0.5) == (y > 0.5)).sum())
            known_cells += int(known.sum())
            if 0 < y.sum() < len(y):
                auc = float(roc_auc_score(y, p))
                aucs.append(auc)
        out[CLASS_METRIC + name] = auc
    accuracy = right / known_cells if known_cells else None
    if exclusive and labels.shape[1]:
        one = rows & ((labels == 1).sum(axis=1) == 1)
        if one.any():
            truth = np.argmax(labels[one] == 1, axis=1)
            accuracy = float((np.argmax(probabilities[one], axis=1) == truth).mean())
        else:
            accuracy = None
    return {"val_macro_auc": float(np.mean(aucs)) if aucs else None, "val_accuracy": accuracy, **out}


def better(a: dict, b: dict) -> bool:
    """Whether metrics ``a`` beat ``b`` on validation macro AUC (a measured value beats none)."""
    x, y = a.get("val_macro_auc"), b.get("val_macro_auc")
    return x is not None and (y is None or x > y)
