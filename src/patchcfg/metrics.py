"""Masked multi-label metrics: every class is scored on the rows where its label is known.

Labels use 1 / 0 / -1 (unknown). A class whose known labels are all one value has no AUC (NaN)
and is left out of the macro mean, which says how many classes it covers.
"""

from __future__ import annotations

import re

import numpy as np

from patchcfg.label_groups import has_groups, resolve_labels

METRICS = ("auc", "f1", "precision", "recall", "accuracy")

#: name parts of metrics that improve downwards (besides names containing "loss" or "error")
LOWER_IS_BETTER = frozenset(
    {"err", "mse", "mae", "rmse", "mape", "msle", "nll", "ece", "brier", "perplexity", "fpr", "fnr",
     "hamming", "distance", "time", "seconds", "align", "uniform"})
#: name parts of metrics that improve upwards (besides names containing "acc" or "auc")
HIGHER_IS_BETTER = frozenset({"f1", "precision", "recall", "nmi", "iou", "map", "r2", "accuracy", "auc"})


def metric_mode(name: str) -> str | None:
    """``"max"`` or ``"min"``: which way a metric improves, or None for a logged value that is no
    score (``lr``, ``epoch``). Alignment and uniformity (Wang & Isola 2020) improve downwards.

    >>> metric_mode("val_macro_auc"), metric_mode("val_loss"), metric_mode("uniform"), metric_mode("lr")
    ('max', 'min', 'min', None)
    """
    lowered = name.lower()
    if "acc" in lowered or "auc" in lowered:
        return "max"
    if "loss" in lowered or "error" in lowered:
        return "min"
    parts = set(re.split(r"[^a-z0-9]+", lowered))
    if parts & LOWER_IS_BETTER:
        return "min"
    if parts & HIGHER_IS_BETTER:
        return "max"
    return None


def _per_class(y_true: np.ndarray, y_prob: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    from sklearn.metrics import roc_auc_score

    n_classes = y_true.shape[1]
    out = {name: np.full(n_classes, np.nan) for name in METRICS}
    out["known"] = np.zeros(n_classes, int)
    for c in range(n_classes):
        known = y_true[:, c] >= 0
        out["known"][c] = int(known.sum())
        if not known.any():
            continue
        truth = y_true[known, c] > 0.5
        prob = y_prob[known, c]
        pred = prob >= threshold
        tp, fp, fn = np.sum(pred & truth), np.sum(pred & ~truth), np.sum(~pred & truth)
        out["accuracy"][c] = np.mean(pred == truth)
        out["precision"][c] = tp / (tp + fp) if tp + fp else np.nan
        out["recall"][c] = tp / (tp + fn) if tp + fn else np.nan
        p, r = out["precision"][c], out["recall"][c]
        out["f1"][c] = 2 * p * r / (p + r) if np.isfinite(p) and np.isfinite(r) and p + r else (
            0.0 if tp + fp + fn else np.nan)
        if 0 < truth.sum() < truth.size:
            out["auc"][c] = roc_auc_score(truth, prob)
    return out


def masked_metrics(y_true, y_prob, classes: list[str], threshold: float = 0.5,
                   prefix: str = "val_") -> dict[str, float]:
    """``{prefix}macro_auc``, ``{prefix}macro_f1``, ... plus ``{prefix}auc_<class>`` per class."""
    y_true = np.asarray(y_true, dtype=np.float32)
    y_prob = np.asarray(y_prob, dtype=np.float32)
    per_class = _per_class(y_true, y_prob, threshold)
    result: dict[str, float] = {}
    for name in METRICS:
        values = per_class[name]
        finite = values[np.isfinite(values)]
        result[f"{prefix}macro_{name}"] = float(finite.mean()) if finite.size else float("nan")
        for cls, value in zip(classes, values, strict=True):
            result[f"{prefix}{name}_{cls}"] = float(value)
    return result


def is_per_class(name: str) -> bool:
    """``val_auc_cat`` is (a :func:`masked_metrics` metric of one class); ``val_macro_auc``,
    ``val_auc``, ``val_loss`` and ``loss`` are not."""
    return any(name.startswith(f"val_{metric}_") for metric in METRICS)


def exclusive_accuracy(y_true, y_prob) -> float:
    """Top-1 accuracy over rows whose labels are fully known and have exactly one positive."""
    y_true = np.asarray(y_true)
    rows = np.all(y_true >= 0, axis=1) & (np.sum(y_true > 0.5, axis=1) == 1)
    if not rows.any():
        return float("nan")
    return float(np.mean(np.argmax(y_true[rows], axis=1) == np.argmax(np.asarray(y_prob)[rows], axis=1)))


def group_metrics(y_true, y_prob, groups, prefix: str = "val_") -> dict[str, float]:
    """Per output group (:mod:`patchcfg.models.outputs`), on its columns with softmax groups
    resolved: ``{prefix}<group>_accuracy`` (softmax: top-1 over the rows that resolve it; sigmoid:
    over its known entries at 0.5) and ``{prefix}<group>_macro_auc`` (mean of its classes' AUCs)."""
    y_true = resolve_labels(np.asarray(y_true, np.float32), groups)
    y_prob = np.asarray(y_prob, np.float32)
    out: dict[str, float] = {}
    for g in groups:
        truth, prob = y_true[:, g.start:g.stop], y_prob[:, g.start:g.stop]
        if g.softmax:
            rows = truth.max(axis=1) > 0.5
            accuracy = (np.mean(truth[rows].argmax(1) == prob[rows].argmax(1)) if rows.any() else np.nan)
        else:
            known = truth >= 0
            accuracy = np.mean((prob[known] >= 0.5) == (truth[known] > 0.5)) if known.any() else np.nan
        aucs = _per_class(truth, prob, 0.5)["auc"]
        aucs = aucs[np.isfinite(aucs)]
        out[f"{prefix}{g.name}_accuracy"] = float(accuracy)
        out[f"{prefix}{g.name}_macro_auc"] = float(aucs.mean()) if aucs.size else float("nan")
    return out


def grouped_metrics(y_true, y_prob, classes: list[str], groups, threshold: float = 0.5,
                    prefix: str = "val_") -> dict[str, float]:
    """:func:`masked_metrics` on the labels with softmax groups resolved, plus
    :func:`group_metrics` when the output has groups (more than one, or a softmax one); for the
    plain multi-hot model exactly :func:`masked_metrics`."""
    if not has_groups(groups):
        return masked_metrics(y_true, y_prob, classes, threshold=threshold, prefix=prefix)
    out = masked_metrics(resolve_labels(np.asarray(y_true, np.float32), groups), y_prob, classes,
                         threshold=threshold, prefix=prefix)
    out.update(group_metrics(y_true, y_prob, groups, prefix=prefix))
    return out
