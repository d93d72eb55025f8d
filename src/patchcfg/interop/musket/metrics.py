"""Musket metric names (``primary_metric``, callbacks' ``monitor``) as ours."""

from __future__ import annotations

from typing import Any

from patchcfg.interop.musket.report import Report
from patchcfg.interop.musket.values import show

# Musket metric names (without val_) -> ours (without val_); ours are masked, per class, macro-averaged.
METRIC_NAMES = {
    "loss": "loss",
    "binary_accuracy": "macro_accuracy", "accuracy": "macro_accuracy", "acc": "macro_accuracy",
    "categorical_accuracy": "macro_accuracy", "macro_accuracy": "macro_accuracy",
    "macro_f1": "macro_f1", "f1": "macro_f1", "f1_score": "macro_f1", "fmeasure": "macro_f1",
    "auc": "macro_auc", "roc_auc": "macro_auc", "macro_auc": "macro_auc",
    "precision": "macro_precision", "macro_precision": "macro_precision",
    "recall": "macro_recall", "macro_recall": "macro_recall",
}


def convert_metric(value: Any, path: tuple, report: Report) -> str | None:
    """Musket metric name -> ours; reports and returns None when there is none."""
    if not isinstance(value, str):
        report.lost(path, f"expected a metric name, got {show(value)}")
        return None
    base = value[4:] if value.startswith("val_") else value
    ours = METRIC_NAMES.get(base)
    if ours is None:
        report.lost(path, f"no patchcfg metric like '{value}'; ours are val_macro_auc, val_macro_f1, "
                          "val_macro_accuracy, val_macro_precision, val_macro_recall and val_loss")
        return None
    mapped = ours if ours == "loss" and base == value else f"val_{ours}"
    if mapped != value:
        detail = "" if ours == "loss" else " (per class on the known labels, averaged over classes)"
        training = " (Musket's is measured on training batches)" if base == value and ours != "loss" else ""
        report.note(path, f"{value} -> {mapped}{detail}{training}")
    return mapped
