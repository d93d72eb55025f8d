"""Barlow Twins: make the cross-correlation of the two views' embeddings the identity.

Zbontar, Jing, Misra, LeCun & Deny, "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction", ICML 2021, eq. (1)-(2). Each embedding dimension is normalised over the batch (mean 0,
standard deviation 1: batch norm without its affine part, ``(z - mean) / sqrt(var + 1e-5)``), then::

    C_ij = sum_b z1_bi z2_bj / n
    loss = sum_i (1 - C_ii)^2 + lambda sum_i sum_{j != i} C_ij^2

with lambda = 5e-3 in the paper (Tsai et al. 2021 suggest 1/d). ``C`` is a statistic of the batch:
under ``tf.distribute`` it is taken over the global batch (the embeddings gathered over replicas;
the paper all-reduces ``C``, which is the same).
"""

from __future__ import annotations

import tensorflow as tf

#: batch norm's epsilon (PyTorch's BatchNorm1d default, the paper's code)
BATCHNORM_EPSILON = 1e-5


def cross_correlation(z1, z2):
    """``C`` (d x d) of the batch-normalised embeddings (biased variance, as batch norm computes it)."""
    def normalise(z):
        mean, variance = tf.nn.moments(tf.cast(z, tf.float32), axes=[0])
        return (tf.cast(z, tf.float32) - mean) / tf.sqrt(variance + BATCHNORM_EPSILON)

    n = tf.cast(tf.shape(z1)[0], tf.float32)
    return tf.matmul(normalise(z1), normalise(z2), transpose_a=True) / n


def barlow_twins_loss(z1, z2, off_diagonal_weight):
    """Barlow Twins' loss of a batch (Zbontar et al. 2021), a scalar, and its two terms (a dict:
    ``on_diagonal``, ``off_diagonal``, the latter not yet weighted).

    >>> import numpy as np
    >>> z = np.array([[1.0, 1.0], [-1.0, -1.0]], "float32")   # both dimensions perfectly correlated
    >>> loss, terms = barlow_twins_loss(z, z, 0.5)
    >>> round(float(loss), 3), {k: round(float(v), 3) for k, v in terms.items()}   # 0 + 0.5 * 2
    (1.0, {'on_diagonal': 0.0, 'off_diagonal': 2.0})
    """
    c = cross_correlation(z1, z2)
    diagonal = tf.linalg.diag_part(c)
    on_diagonal = tf.reduce_sum(tf.square(1.0 - diagonal))
    off_diagonal = tf.reduce_sum(tf.square(c)) - tf.reduce_sum(tf.square(diagonal))
    return on_diagonal + off_diagonal_weight * off_diagonal, {"on_diagonal": on_diagonal,
                                                              "off_diagonal": off_diagonal}
