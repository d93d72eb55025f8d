"""Masked metrics score each class on its known rows only."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from patchcfg.metrics import exclusive_accuracy, masked_metrics


def test_unknown_rows_do_not_count():
    y = np.array([[1, 0], [0, -1], [1, 1], [-1, 0]], np.float32)
    p = np.array([[0.9, 0.2], [0.3, 0.99], [0.6, 0.7], [0.0, 0.4]], np.float32)
    m = masked_metrics(y, p, ["a", "b"])
    assert m["val_auc_a"] == pytest.approx(roc_auc_score([1, 0, 1], [0.9, 0.3, 0.6]))
    assert m["val_auc_b"] == pytest.approx(roc_auc_score([0, 1, 0], [0.2, 0.7, 0.4]))
    assert m["val_macro_auc"] == pytest.approx(1.0)
    assert m["val_accuracy_a"] == pytest.approx(1.0)
    # changing predictions on unknown entries changes nothing
    p2 = p.copy()
    p2[1, 1], p2[3, 0] = 0.0, 1.0
    assert masked_metrics(y, p2, ["a", "b"]) == m


def test_single_valued_class_has_no_auc_and_is_left_out_of_the_macro():
    y = np.array([[1, 1], [1, 0]], np.float32)
    p = np.array([[0.9, 0.8], [0.2, 0.1]], np.float32)
    m = masked_metrics(y, p, ["a", "b"], prefix="")
    assert np.isnan(m["auc_a"]) and m["macro_auc"] == pytest.approx(1.0)
    assert m["recall_a"] == pytest.approx(0.5) and m["precision_a"] == pytest.approx(1.0)


def test_exclusive_accuracy_uses_fully_known_single_label_rows():
    y = np.array([[1, 0, 0], [0, 1, 0], [0, -1, 1], [1, 1, 0]], np.float32)
    p = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0, 0, 1], [1, 0, 0]], np.float32)
    assert exclusive_accuracy(y, p) == pytest.approx(0.5)
