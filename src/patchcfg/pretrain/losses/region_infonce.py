"""DetCon's region InfoNCE: a region of view 1 must pick the same region of view 2.

Hénaff, Koppula, Alayrac, van den Oord, Vinyals & Carreira, "Efficient Visual Pretraining with
Contrastive Detection", ICCV 2021 (DetCon_S). Every region of every image in the global batch is a
negative, except regions missing from either view, which take no part at all.
"""

from __future__ import annotations

import tensorflow as tf


def region_infonce(z1, z2, valid, temperature, *, z1_all=None, z2_all=None, valid_all=None, offset=0):
    """Per-region InfoNCE of DetCon (mean of both directions) and whether each region's positive
    scored highest; regions are rows ``(R, d)``, ``valid`` (R,) says which take part. ``*_all``: the
    same from every replica, this replica's rows starting at ``offset`` (default: these rows).

    >>> import numpy as np
    >>> z = np.eye(3, dtype="float32")
    >>> loss, hit = region_infonce(z, z, np.array([True, True, False]), 1.0)
    >>> [round(float(v), 4) for v in loss], hit.numpy().tolist()   # -log(e / (e + 1)); region 3 left out
    ([0.3133, 0.3133, 0.0], [1.0, 1.0, 0.0])
    """
    z1 = tf.math.l2_normalize(tf.cast(z1, tf.float32), axis=1)
    z2 = tf.math.l2_normalize(tf.cast(z2, tf.float32), axis=1)
    if z1_all is None:
        z1_all, z2_all, valid_all, offset = z1, z2, valid, 0
    else:
        z1_all = tf.math.l2_normalize(tf.cast(z1_all, tf.float32), axis=1)
        z2_all = tf.math.l2_normalize(tf.cast(z2_all, tf.float32), axis=1)
    target = tf.cast(offset, tf.int32) + tf.range(tf.shape(z1)[0], dtype=tf.int32)
    # regions missing from either view are never a negative either
    blocked = (1.0 - tf.cast(valid_all, tf.float32))[None, :] * -1e9

    def side(a, b_all):
        logits = tf.matmul(a, b_all, transpose_b=True) / temperature + blocked
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target, logits=logits)
        hit = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), target)
        return loss, hit

    loss1, hit1 = side(z1, z2_all)
    loss2, hit2 = side(z2, z1_all)
    valid = tf.cast(valid, tf.float32)
    accuracy = 0.5 * (tf.cast(hit1, tf.float32) + tf.cast(hit2, tf.float32))
    return 0.5 * (loss1 + loss2) * valid, accuracy * valid
