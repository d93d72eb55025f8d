"""NNCLR's loss: the nearest neighbour of an embedding in a support set is its positive.

Dwibedi, Aytar, Tompson, Sermanet & Zisserman, "With a Little Help from My Friends: Nearest-Neighbor
Contrastive Learning of Visual Representations", ICCV 2021, eq. (2). ``NN(z, Q)`` is the element of
the support set ``Q`` (a queue of past projections, L2-normalised) nearest to the normalised ``z``
(highest cosine similarity); with ``p`` the other view's prediction (its projection when there is no
predictor) and every prediction of the global batch as the candidates::

    L_i = -log exp(NN(z1_i) . p2_i / t) / sum_k exp(NN(z1_i) . p2_k / t)

symmetrised with the views swapped (the mean of both). No gradient flows into the support set.
"""

from __future__ import annotations

import tensorflow as tf


def nearest_neighbours(z, support):
    """``(neighbours, indices)``: for each row of ``z`` the row of ``support`` nearest to it after L2
    normalisation (highest cosine similarity, i.e. smallest Euclidean distance), normalised, without
    gradient.

    >>> import numpy as np
    >>> support = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], "float32")
    >>> nearest_neighbours(np.array([[0.2, 0.9], [-3.0, 1.0]], "float32"), support)[1].numpy().tolist()
    [1, 2]
    """
    z = tf.math.l2_normalize(tf.cast(z, tf.float32), axis=1)
    support = tf.math.l2_normalize(tf.stop_gradient(tf.cast(support, tf.float32)), axis=1)
    indices = tf.argmax(tf.matmul(z, support, transpose_b=True), axis=1, output_type=tf.int32)
    return tf.stop_gradient(tf.gather(support, indices)), indices


def nnclr_loss(z1, z2, p1, p2, support, temperature, *, p1_all=None, p2_all=None, offset=0):
    """Per-example NNCLR loss (Dwibedi et al. 2021) and whether each neighbour's positive scored
    highest, each ``(n,)``. ``z``: the views' projections (looked up in ``support``), ``p``: their
    predictions; ``p*_all``: the predictions of the global batch, the local rows from ``offset``.

    >>> import numpy as np
    >>> e = np.eye(2, dtype="float32")
    >>> loss, hit = nnclr_loss(e, e, e, e, e, 1.0)
    >>> [round(float(v), 4) for v in loss], hit.numpy().tolist()   # -log(e / (e + 1)) each
    ([0.3133, 0.3133], [1.0, 1.0])
    """
    if p1_all is None:
        p1_all, p2_all, offset = p1, p2, 0
    target = tf.cast(offset, tf.int32) + tf.range(tf.shape(z1)[0], dtype=tf.int32)

    def side(z, p_all):
        neighbours, _ = nearest_neighbours(z, support)
        logits = tf.matmul(neighbours, tf.math.l2_normalize(tf.cast(p_all, tf.float32), axis=1),
                           transpose_b=True) / temperature
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target, logits=logits)
        hit = tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), target), tf.float32)
        return loss, hit

    loss1, hit1 = side(z1, p2_all)
    loss2, hit2 = side(z2, p1_all)
    return 0.5 * (loss1 + loss2), 0.5 * (hit1 + hit2)
