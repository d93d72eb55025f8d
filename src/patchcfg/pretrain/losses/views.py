"""What the in-batch contrastive losses share: normalised views and where the local rows sit."""

from __future__ import annotations

import tensorflow as tf


def normalized_views(z1, z2, z1_all=None, z2_all=None, offset=0):
    """L2-normalised float32 views, the global batch they belong to (themselves when not given)
    and the local rows' indices in it (``offset + i``)."""
    z1 = tf.math.l2_normalize(tf.cast(z1, tf.float32), axis=1)
    z2 = tf.math.l2_normalize(tf.cast(z2, tf.float32), axis=1)
    if z1_all is None:
        z1_all, z2_all, offset = z1, z2, 0
    else:
        z1_all = tf.math.l2_normalize(tf.cast(z1_all, tf.float32), axis=1)
        z2_all = tf.math.l2_normalize(tf.cast(z2_all, tf.float32), axis=1)
    index = tf.cast(offset, tf.int32) + tf.range(tf.shape(z1)[0], dtype=tf.int32)
    return z1, z2, z1_all, z2_all, index
