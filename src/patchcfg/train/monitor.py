"""Downstream monitoring of an encoder while it trains: a linear probe, alignment and uniformity.

The probe (patchwork's best feature) answers "are these features getting better for *my* labels?"
every few epochs: a logistic regression on frozen, pooled features of the labelled training rows,
scored on held-out labelled rows. Labels are multi-hot and partially known, so the probe is
one-vs-rest and *masked*: the classifier of class ``c`` is fitted (and scored) only on rows where
``c`` is known.

Metrics (keys of ``metrics.csv`` and TensorBoard scalars):

- ``probe_macro_auc``: ROC AUC per class on the held-out rows where the class is known, averaged
  over the classes that have both positives and negatives there.
- ``probe_accuracy``: when the label table has *exclusive-looking* classes (a group of at least two
  classes never both present in a row, e.g. the digits zero..nine beside ``even`` and ``loop``),
  the accuracy of the argmax over that group's probabilities on held-out rows with exactly one
  positive in the group and the group fully known; otherwise the per-class binary accuracy
  (threshold 0.5) on known entries, averaged over classes. ``probe_accuracy_kind`` in the
  summary says which (``exclusive`` or ``per_class``).
- ``align`` and ``uniform`` (Wang & Isola, "Understanding Contrastive Representation Learning
  through Alignment and Uniformity on the Hypersphere", ICML 2020), on L2-normalised features of
  two augmented views of the same images: ``align = E ||f(x) - f(y)||^2`` over positive pairs
  (lower: views agree) and ``uniform = log E exp(-2 ||f(x) - f(x')||^2)`` over all pairs (lower:
  features spread over the sphere).

Everything here is NumPy and scikit-learn: deterministic, so every worker of a multi-worker run
computes the same numbers (callbacks such as EarlyStopping decide on them).
"""

from __future__ import annotations

import warnings

import numpy as np


def alignment(f1: np.ndarray, f2: np.ndarray, alpha: float = 2.0) -> float:
    """``E ||f1_i - f2_i||^alpha`` of L2-normalised rows (Wang & Isola 2020)."""
    f1, f2 = _normalize(f1), _normalize(f2)
    return float(np.mean(np.linalg.norm(f1 - f2, axis=1) ** alpha))


def uniformity(f: np.ndarray, t: float = 2.0) -> float:
    """``log E_{i<j} exp(-t ||f_i - f_j||^2)`` of L2-normalised rows (Wang & Isola 2020)."""
    f = _normalize(f).astype(np.float64)
    sq = np.sum(f * f, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * f @ f.T, 0.0)
    iu = np.triu_indices(len(f), k=1)
    values = -t * d2[iu]
    top = values.max()
    return float(top + np.log(np.mean(np.exp(values - top))))


def alignment_uniformity(f1: np.ndarray, f2: np.ndarray) -> dict[str, float]:
    """``{"align": ..., "uniform": ...}``; uniformity is the mean over the two views."""
    return {"align": alignment(f1, f2), "uniform": 0.5 * (uniformity(f1) + uniformity(f2))}


def _normalize(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def exclusive_classes(labels: np.ndarray) -> list[int]:
    """A group of classes that never appear together as positives (greedy, in column order).

    ``labels``: (rows, classes) with 1 present, 0 absent, -1 unknown. Classes without any positive
    are left out. Returns column indices; fewer than two means "no exclusive group".
    """
    positive = labels == 1
    chosen: list[int] = []
    for c in range(labels.shape[1]):
        if not positive[:, c].any():
            continue
        if all(not np.any(positive[:, c] & positive[:, other]) for other in chosen):
            chosen.append(c)
    return chosen


class LinearProbe:
    """A masked one-vs-rest logistic-regression probe over a label table's labelled rows.

    Args:
        labels: (rows, classes) float, 1/0/-1 (unknown) for the rows given to :meth:`score`.
        validation: (rows,) bool, the held-out rows; if none of them has a label, a seeded
            ``validation_fraction`` of the labelled rows is held out instead.
        classes: class names.
        C: inverse regularisation strength.
        seed: for the fallback split and the solver.
    """

    def __init__(self, labels: np.ndarray, validation: np.ndarray, classes: list[str], *, C: float = 1.0,
                 seed: int = 0, validation_fraction: float = 0.2):
        self.labels = np.asarray(labels, dtype=np.float32)
        self.classes = list(classes)
        self.C = float(C)
        self.seed = int(seed)
        labelled = (self.labels >= 0).any(axis=1)
        validation = np.asarray(validation, dtype=bool) & labelled
        if validation.any():
            self.split_ = "validation column"
            self.val_rows_ = np.flatnonzero(validation)
            self.train_rows_ = np.flatnonzero(labelled & ~validation)
        else:
            rows = np.flatnonzero(labelled)
            rng = np.random.default_rng(self.seed)
            rng.shuffle(rows)
            n_val = max(1, int(round(len(rows) * validation_fraction))) if len(rows) > 1 else 0
            self.split_ = f"seeded {validation_fraction:g} split"
            self.val_rows_ = np.sort(rows[:n_val])
            self.train_rows_ = np.sort(rows[n_val:])
        group = exclusive_classes(self.labels[self.train_rows_]) if len(self.train_rows_) else []
        self.exclusive_ = group if len(group) >= 2 else []
        self.accuracy_kind_ = "exclusive" if self.exclusive_ else "per_class"

    @property
    def rows(self) -> np.ndarray:
        """Rows whose features :meth:`score` needs (training then held-out)."""
        return np.concatenate([self.train_rows_, self.val_rows_])

    def usable(self) -> bool:
        """At least one class with both values among the training rows, and held-out rows."""
        if len(self.val_rows_) == 0 or len(self.train_rows_) == 0:
            return False
        y = self.labels[self.train_rows_]
        return any(((y[:, c] == 1).any() and (y[:, c] == 0).any()) for c in range(y.shape[1]))

    def score(self, features: np.ndarray) -> dict[str, float]:
        """Fit on the training rows' features and score on the held-out ones.

        ``features``: (len(self.rows), D), in the order of :attr:`rows`.
        """
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import roc_auc_score
        from sklearn.preprocessing import StandardScaler

        features = np.asarray(features, dtype=np.float64)
        n_train = len(self.train_rows_)
        x_train, x_val = features[:n_train], features[n_train:]
        scaler = StandardScaler().fit(x_train)
        x_train, x_val = scaler.transform(x_train), scaler.transform(x_val)
        y_train, y_val = self.labels[self.train_rows_], self.labels[self.val_rows_]
        probabilities = np.full(y_val.shape, np.nan)
        aucs, binary_acc = [], []
        for c in range(y_train.shape[1]):
            known = y_train[:, c] >= 0
            target = y_train[known, c]
            if known.sum() == 0:
                continue
            if np.unique(target).size < 2:
                probabilities[:, c] = float(target[0])
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    model = LogisticRegression(C=self.C, max_iter=500, random_state=self.seed)
                    model.fit(x_train[known], target)
                probabilities[:, c] = model.predict_proba(x_val)[:, 1]
            val_known = y_val[:, c] >= 0
            if not val_known.any():
                continue
            truth = y_val[val_known, c]
            binary_acc.append(float(np.mean((probabilities[val_known, c] >= 0.5) == (truth == 1))))
            if np.unique(truth).size == 2:
                aucs.append(float(roc_auc_score(truth, probabilities[val_known, c])))
        out = {"probe_macro_auc": float(np.mean(aucs)) if aucs else float("nan")}
        accuracy = float(np.mean(binary_acc)) if binary_acc else float("nan")
        if self.exclusive_:
            group = y_val[:, self.exclusive_]
            rows = (group >= 0).all(axis=1) & ((group == 1).sum(axis=1) == 1)
            scores = probabilities[:, self.exclusive_]
            if rows.any() and not np.isnan(scores[rows]).any():
                accuracy = float(np.mean(np.argmax(scores[rows], axis=1) == np.argmax(group[rows], axis=1)))
        out["probe_accuracy"] = accuracy
        return out
