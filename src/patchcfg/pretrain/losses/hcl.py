"""The HCL loss: hard negative samples, reweighted and debiased.

Robinson, Chuang, Sra & Jegelka, "Contrastive Learning with Hard Negative Samples", ICLR 2021.
Like SimCLR (two views, in-batch negatives gathered over replicas), but the negatives' sum is
replaced by an importance-weighted, debiased estimate. For anchor ``i`` with positive similarity
``p = exp(s+/t)`` and the ``N = 2M - 2`` negatives ``n_k = exp(s_k/t)`` of a global batch of ``M``
images (everything but the anchor and its positive)::

    w_k  = n_k ** beta / mean_k(n_k ** beta)                  (hard-negative weights)
    Ng   = (sum_k w_k n_k - tau_plus * N * p) / (1 - tau_plus)  (debiased negative term)
    Ng   = max(Ng, N * exp(-1/t))                           (its theoretical minimum)
    loss = -log p / (p + Ng)

This is the form of the paper's equation and code: the positive is *not* in the sum over
negatives but is added to the denominator once. With ``beta = tau_plus = 0``, ``w_k = 1`` and
``Ng = sum_k n_k >= N exp(-1/t)``, so the loss is exactly SimCLR's NT-Xent (whose denominator is
the positive plus the same 2M - 2 negatives): :func:`hcl_loss` equals
:func:`patchcfg.pretrain.losses.nt_xent.nt_xent_terms`'s loss for the same inputs.

Numerics: every exponential is taken relative to the largest possible logit ``1/t`` (cosine
similarity <= 1); the ratio, the weights and the clamp are unchanged by that common factor.
"""

from __future__ import annotations

import tensorflow as tf

from patchcfg.pretrain.losses.views import normalized_views


def _hcl_side(a, a_all, b_all, index, temperature, beta, tau_plus):
    m = tf.shape(a_all)[0]
    inv_t = 1.0 / temperature
    self_mask = tf.one_hot(index, m, dtype=tf.float32)
    # negatives: [b_all without the positive, a_all without the anchor]
    mask = tf.concat([1.0 - self_mask, 1.0 - self_mask], axis=1)
    sims = tf.concat([tf.matmul(a, b_all, transpose_b=True), tf.matmul(a, a_all, transpose_b=True)], axis=1)
    shifted = (sims - 1.0) * inv_t  # log(n_k) - 1/t
    positive_logit = (tf.reduce_sum(a * tf.gather(b_all, index), axis=1) - 1.0) * inv_t
    pos = tf.exp(positive_logit)
    neg = tf.exp(shifted) * mask
    count = tf.cast(2 * m - 2, tf.float32)
    importance = tf.exp(beta * shifted) * mask
    reweighted = tf.reduce_sum(importance * neg, axis=1) / (tf.reduce_sum(importance, axis=1) / count)
    ng = (reweighted - tau_plus * count * pos) / (1.0 - tau_plus)
    ng = tf.maximum(ng, count * tf.exp(-2.0 * inv_t))  # N e^{-1/t}, times the common e^{-1/t}
    return tf.math.log(pos + ng) - positive_logit


def hcl_loss(z1, z2, temperature, beta, tau_plus, *, z1_all=None, z2_all=None, offset=0):
    """Per-example HCL loss (Robinson et al. 2021), mean of the two views' losses; shape ``(n,)``.

    Arguments as :func:`patchcfg.pretrain.losses.nt_xent.nt_xent_terms`.

    >>> import numpy as np
    >>> from patchcfg.pretrain.losses.nt_xent import nt_xent_terms
    >>> z = np.eye(3, dtype="float32")
    >>> simclr = nt_xent_terms(z, z, 1.0, decoupled=False)[0]
    >>> bool(np.allclose(hcl_loss(z, z, 1.0, beta=0.0, tau_plus=0.0), simclr))
    True
    """
    z1, z2, z1_all, z2_all, index = normalized_views(z1, z2, z1_all, z2_all, offset)
    beta, tau_plus = float(beta), float(tau_plus)
    loss1 = _hcl_side(z1, z1_all, z2_all, index, temperature, beta, tau_plus)
    loss2 = _hcl_side(z2, z2_all, z1_all, index, temperature, beta, tau_plus)
    return 0.5 * (loss1 + loss2)
