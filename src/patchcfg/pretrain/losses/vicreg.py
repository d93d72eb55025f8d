"""VICReg: variance, invariance and covariance regularisation of two batches of embeddings.

Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", ICLR 2022, eq. (1)-(6) and Algorithm 1. For embeddings ``Z``, ``Z'`` (n x d) of the two
views::

    s(Z, Z') = mean_{i,j} (z_ij - z'_ij)^2                        (invariance: the MSE, Algorithm 1)
    v(Z)     = 1/d sum_j max(0, gamma - sqrt(Var(z^j) + eps))     (variance hinge per dimension)
    c(Z)     = 1/d sum_{i != j} C(Z)_ij^2,  C(Z) = (Z - mean)^T (Z - mean) / (n - 1)
    loss     = lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')]

with the unbiased variance, gamma = 1, eps = 1e-4, lambda = mu = 25, nu = 1 in the paper. ``v`` and
``c`` are statistics of the batch: under ``tf.distribute`` they are taken over the global batch
(the embeddings gathered over replicas), as the paper's code gathers them over GPUs.
"""

from __future__ import annotations

import tensorflow as tf


def _variance(z, gamma, epsilon):
    std = tf.sqrt(tf.math.reduce_variance(z, axis=0) * _unbiased(z) + epsilon)
    return tf.reduce_mean(tf.nn.relu(gamma - std))


def _unbiased(z):
    n = tf.cast(tf.shape(z)[0], tf.float32)
    return n / (n - 1.0)


def _covariance(z):
    n = tf.cast(tf.shape(z)[0], tf.float32)
    d = tf.cast(tf.shape(z)[1], tf.float32)
    centred = z - tf.reduce_mean(z, axis=0, keepdims=True)
    cov = tf.matmul(centred, centred, transpose_a=True) / (n - 1.0)
    off_diagonal = cov - tf.linalg.diag(tf.linalg.diag_part(cov))
    return tf.reduce_sum(tf.square(off_diagonal)) / d


def vicreg_loss(z1, z2, invariance_weight, variance_weight, covariance_weight, gamma, epsilon):
    """VICReg's loss of a batch (Bardes et al. 2022), a scalar, and its three terms (a dict:
    ``invariance`` s, ``variance`` v(Z) + v(Z'), ``covariance`` c(Z) + c(Z')).

    >>> import numpy as np
    >>> z = np.array([[1.0, 1.0], [-1.0, -1.0]], "float32")   # std sqrt(2) each, covariance 2
    >>> loss, terms = vicreg_loss(z, z, 25.0, 25.0, 1.0, gamma=1.0, epsilon=0.0)
    >>> round(float(loss), 4), {k: round(float(v), 4) for k, v in terms.items()}
    (8.0, {'invariance': 0.0, 'variance': 0.0, 'covariance': 8.0})
    """
    z1 = tf.cast(z1, tf.float32)
    z2 = tf.cast(z2, tf.float32)
    invariance = tf.reduce_mean(tf.square(z1 - z2))
    variance = _variance(z1, gamma, epsilon) + _variance(z2, gamma, epsilon)
    covariance = _covariance(z1) + _covariance(z2)
    loss = invariance_weight * invariance + variance_weight * variance + covariance_weight * covariance
    return loss, {"invariance": invariance, "variance": variance, "covariance": covariance}
