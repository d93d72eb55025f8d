"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR, and its decoupled form (DCL).

Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020. Yeh et al., "Decoupled Contrastive Learning", ECCV 2022.
"""

from __future__ import annotations

import tensorflow as tf

from patchcfg.pretrain.losses.views import normalized_views

#: Subtracted from logits that must not count (an anchor with itself).
LARGE_NUM = 1e9


def _nt_xent_side(a, a_all, b_all, index, temperature, decoupled):
    """Per-anchor loss and hit (argmax is the positive) for anchors ``a`` against ``[b_all, a_all]``."""
    m = tf.shape(a_all)[0]
    self_mask = tf.one_hot(index, m, dtype=a.dtype)
    sim_ab = tf.matmul(a, b_all, transpose_b=True) / temperature
    sim_aa = tf.matmul(a, a_all, transpose_b=True) / temperature - LARGE_NUM * self_mask
    positive = tf.gather(sim_ab, index, axis=1, batch_dims=1)
    logits = tf.concat([sim_ab, sim_aa], axis=1)
    hit = tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), index), tf.float32)
    if decoupled:
        sim_ab = sim_ab - LARGE_NUM * self_mask  # the positive sits on the "self" index of b_all
        logits = tf.concat([sim_ab, sim_aa], axis=1)
    return tf.reduce_logsumexp(logits, axis=1) - positive, hit


def nt_xent_terms(z1, z2, temperature, *, decoupled, z1_all=None, z2_all=None, offset=0):
    """Per-example NT-Xent loss and contrastive hits, averaged over the two views.

    ``z1[i]`` and ``z2[i]`` are two views of image ``i``. With ``z1_all``/``z2_all`` (the global
    batch, e.g. gathered over replicas) the local rows are rows ``offset + i`` of them. For anchor
    ``z1[i]`` (cosine similarities ``s``, temperature ``t``)::

        l = -log exp(s(z1_i, z2_i)/t) / sum_{k != i} exp(s(z1_i, v_k)/t),  v = [z2_all, z1_all]

    i.e. the positive plus 2N - 2 negatives in the denominator; ``decoupled`` (DCL) drops the
    positive from it. The loss of ``z2[i]`` is symmetric; the result is their mean.

    Returns ``(loss, hit)``, each of shape ``(n,)``.

    >>> import numpy as np
    >>> z = np.eye(2, dtype="float32")
    >>> loss, hit = nt_xent_terms(z, z, 1.0, decoupled=False)
    >>> [round(float(v), 4) for v in loss], [float(v) for v in hit]   # -log(e / (e + 2)) each
    ([0.5514, 0.5514], [1.0, 1.0])
    """
    z1, z2, z1_all, z2_all, index = normalized_views(z1, z2, z1_all, z2_all, offset)
    loss1, hit1 = _nt_xent_side(z1, z1_all, z2_all, index, temperature, decoupled)
    loss2, hit2 = _nt_xent_side(z2, z2_all, z1_all, index, temperature, decoupled)
    return 0.5 * (loss1 + loss2), 0.5 * (hit1 + hit2)


def nt_xent_loss(z1, z2, temperature, *, decoupled, **kwargs):
    """Mean NT-Xent loss (SimCLR, Chen et al. 2020) of two batches of views.

    >>> import numpy as np
    >>> z = np.eye(2, dtype="float32")
    >>> round(float(nt_xent_loss(z, z, temperature=1.0, decoupled=False)), 4)   # -log(e / (e + 2))
    0.5514
    """
    loss, _ = nt_xent_terms(z1, z2, temperature, decoupled=decoupled, **kwargs)
    return tf.reduce_mean(loss)
