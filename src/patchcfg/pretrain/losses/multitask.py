"""Multitask losses: a masked binary cross-entropy per task, mixed by weights or by learnt uncertainty.

A task's loss is the binary cross-entropy over its known labels (-1 = unknown), averaged over them
per example; an example with no known label in a task scores 0 there. Tasks are mixed by fixed
weights, or by learnt uncertainty (Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty
to Weigh Losses for Scene Geometry and Semantics", CVPR 2018): ``sum_t exp(-s_t) L_t + s_t / 2``
with ``s_t = log sigma_t^2`` trained beside the network.
"""

from __future__ import annotations

import tensorflow as tf


def masked_task_bce(labels, logits, columns) -> list:
    """Per task (``columns``: a slice of the label columns each), the per-example mean binary
    cross-entropy over the known labels (``labels >= 0``); shape ``(n,)`` each.

    >>> import numpy as np
    >>> labels = np.array([[1.0, -1.0, 0.0]], "float32")          # task a: columns 0-1, task b: column 2
    >>> logits = np.zeros((1, 3), "float32")
    >>> [round(float(v[0]), 4) for v in masked_task_bce(labels, logits, [slice(0, 2), slice(2, 3)])]
    [0.6931, 0.6931]
    """
    labels = tf.convert_to_tensor(labels, tf.float32)
    known = tf.cast(labels >= 0, tf.float32)
    targets = tf.clip_by_value(labels, 0.0, 1.0)
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits) * known
    return [tf.reduce_sum(bce[:, c], axis=1) / tf.maximum(tf.reduce_sum(known[:, c], axis=1), 1.0)
            for c in columns]


def uncertainty_weighted(task_losses, log_variances):
    """Kendall et al. 2018: ``sum_t exp(-s_t) L_t + s_t / 2`` per example, ``s_t = log_variances[t]``.

    >>> import numpy as np
    >>> loss = uncertainty_weighted([np.array([2.0], "float32")], np.array([np.log(2.0)], "float32"))
    >>> round(float(loss[0]), 4)   # 2 / 2 + log(2) / 2
    1.3466
    """
    total = 0.0
    for t, per_example in enumerate(task_losses):
        log_variance = log_variances[t]
        total += tf.exp(-log_variance) * per_example + 0.5 * log_variance
    return total
