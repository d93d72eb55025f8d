"""DetCon_B's loss: online region predictions against the target network's region projections.

Hénaff, Koppula, Alayrac, van den Oord, Vinyals & Carreira, "Efficient Visual Pretraining with
Contrastive Detection", ICCV 2021: DetCon_B takes BYOL's architecture (a predictor on the online
side, a target network that is a moving average of the online one) and keeps DetCon's contrastive
objective across regions. With ``p`` the online prediction of a region pooled in one view and ``t``
the target projection of the regions pooled in the other view (both L2-normalised), for a region
``m`` of view 1 the same region of view 2 is the positive and every other region of every image in
the global batch a negative::

    l_m = -log exp(p1_m . t2_m / tau) / sum_r exp(p1_m . t2_r / tau)

summed over both directions (view 2 predicting view 1), as the paper's code does. ``objective:
byol`` replaces it by BYOL's regression per region, ``(2 - 2 cos(p1_m, t2_m)) + (2 - 2 cos(p2_m, t1_m))``.
Regions missing from either view take no part; the targets get no gradient.
"""

from __future__ import annotations

import tensorflow as tf

from patchcfg.pretrain.losses.byol import normalized_regression

OBJECTIVES = ("nce", "byol")


def detcon_b_loss(p1, p2, t1, t2, valid, temperature, objective, *, t1_all=None, t2_all=None, valid_all=None,
                  offset=0):
    """Per-region DetCon_B loss (both directions summed) and whether each region's positive scored
    highest against the other regions' targets (a diagnostic for either objective); regions are rows
    ``(R, d)``, ``valid`` (R,) says which take part; ``t*_all``/``valid_all``: the same from every
    replica, this replica's rows starting at ``offset``.

    >>> import numpy as np
    >>> e = np.eye(3, dtype="float32")
    >>> loss, hit = detcon_b_loss(e, e, e, e, np.array([True, True, False]), 1.0, "nce")
    >>> [round(float(v), 4) for v in loss], hit.numpy().tolist()   # 2 x -log(e / (e + 1)); region 3 out
    ([0.6265, 0.6265, 0.0], [1.0, 1.0, 0.0])
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective {objective!r}: expected one of {', '.join(OBJECTIVES)}")
    if t1_all is None:
        t1_all, t2_all, valid_all, offset = t1, t2, valid, 0
    target = tf.cast(offset, tf.int32) + tf.range(tf.shape(p1)[0], dtype=tf.int32)
    blocked = (1.0 - tf.cast(valid_all, tf.float32))[None, :] * -1e9  # absent regions are no negatives

    def side(p, t_all):
        p = tf.math.l2_normalize(tf.cast(p, tf.float32), axis=1)
        t_all = tf.math.l2_normalize(tf.stop_gradient(tf.cast(t_all, tf.float32)), axis=1)
        logits = tf.matmul(p, t_all, transpose_b=True) / temperature + blocked
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target, logits=logits)
        hit = tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), target), tf.float32)
        return loss, hit

    loss1, hit1 = side(p1, t2_all)
    loss2, hit2 = side(p2, t1_all)
    if objective == "byol":
        loss1, loss2 = normalized_regression(p1, t2), normalized_regression(p2, t1)
    valid = tf.cast(valid, tf.float32)
    return (loss1 + loss2) * valid, 0.5 * (hit1 + hit2) * valid
