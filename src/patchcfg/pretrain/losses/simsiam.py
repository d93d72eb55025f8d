"""SimSiam's loss: symmetric negative cosine similarity, with a stop-gradient on the projection side.

Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021, eq. (1)-(4):
``D(p, z) = -cos(p, stopgrad(z))`` and ``L = D(p1, z2) / 2 + D(p2, z1) / 2``, with ``p`` the predictor's
output and ``z`` the projection of the other view. The stop-gradient is what keeps it from collapsing.
"""

from __future__ import annotations

import tensorflow as tf


def negative_cosine(p, z):
    """``D(p, z) = -cos(p, stopgrad(z))`` per row (Chen & He 2021, eq. 1 and 3).

    >>> import numpy as np
    >>> float(negative_cosine(np.array([[3.0, 0.0]], "float32"), np.array([[1.0, 0.0]], "float32"))[0])
    -1.0
    """
    p = tf.math.l2_normalize(tf.cast(p, tf.float32), axis=-1)
    z = tf.math.l2_normalize(tf.stop_gradient(tf.cast(z, tf.float32)), axis=-1)
    return -tf.reduce_sum(p * z, axis=-1)


def simsiam_loss(p1, p2, z1, z2):
    """Per-example SimSiam loss (Chen & He 2021): ``D(p1, z2) / 2 + D(p2, z1) / 2``, shape ``(n,)``,
    between -1 (aligned) and 1; no gradient reaches ``z1`` or ``z2``.

    >>> import numpy as np
    >>> e1, e2 = np.array([[1.0, 0.0]], "float32"), np.array([[0.0, 1.0]], "float32")
    >>> round(float(simsiam_loss(e1, e1, e1 + e2, e1 + e2)[0]), 4), float(simsiam_loss(e1, e1, e1, e1)[0])
    (-0.7071, -1.0)
    """
    return 0.5 * negative_cosine(p1, z2) + 0.5 * negative_cosine(p2, z1)
