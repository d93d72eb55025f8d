"""MoCo's InfoNCE over a queue of negatives, with MoCHi's synthetic hard negatives and EqCo's margin.

- He, Fan, Wu, Xie & Girshick, "Momentum Contrast for Unsupervised Visual Representation
  Learning", CVPR 2020: InfoNCE of a query against its key (the positive) and a queue of K keys.
- Kalantidis, Sariyildiz, Pion, Weinzaepfel & Larlus, "Hard Negative Mixing for Contrastive
  Learning" (MoCHi), NeurIPS 2020: per query, ``s`` negatives mixing two of its N hardest queue
  negatives with a coefficient drawn from U(0, 1) per synthetic negative, and ``s'`` mixing the
  query itself with a hard negative (coefficient from U(0, 0.5)); all L2-normalised, used as extra
  negatives in the logits only (no gradient through them, never enqueued).
- Zhu, Liu, Li & Sun, "EqCo: Equivalent Rules for Self-supervised Contrastive Learning", 2020:
  scale the negative term by alpha/K,
  ``L = -log e^{q.k+/t} / (e^{q.k+/t} + (alpha/K) sum_i e^{q.k_i/t})``, which is the InfoNCE
  loss with every negative logit shifted by ``log(alpha/K)``.
"""

from __future__ import annotations

import tensorflow as tf


def eqco_shift(logits, alpha: float):
    """EqCo (Zhu et al. 2020): add ``log(alpha / K)`` to every negative logit (columns 1..K).

    ``logits`` are already divided by the temperature, the positive in column 0; ``K`` is the
    number of negatives (``logits.shape[1] - 1``). Softmax cross-entropy on the result is
    ``-log e^{p} / (e^{p} + (alpha/K) sum_i e^{n_i})``.

    >>> import numpy as np
    >>> [round(float(v), 4) for v in eqco_shift(np.array([[1.0, 0.0, 0.0]], "float32"), alpha=1)[0]]
    [1.0, -0.6931, -0.6931]
    """
    logits = tf.convert_to_tensor(logits, tf.float32)
    k = tf.cast(tf.shape(logits)[1] - 1, tf.float32)
    shift = tf.math.log(tf.cast(alpha, tf.float32) / k)
    return tf.concat([logits[:, :1], logits[:, 1:] + shift], axis=1)


def mochi_negatives(q, queue, n: int, s: int, s_prime: int, seed, *, row_offset=0, total_rows=None):
    """MoCHi synthetic negatives (Kalantidis et al. 2020) for each query.

    Args:
        q: (B, d) L2-normalised queries.
        queue: (K, d) L2-normalised negatives.
        n: N, how many of each query's hardest negatives (highest ``q . k``) are mixed.
        s: negatives mixing two of them, ``a * n_i + (1 - a) * n_j`` with ``i != j`` (when N > 1)
            and ``a ~ U(0, 1)`` drawn for each synthetic negative.
        s_prime: negatives mixing the query, ``b * q + (1 - b) * n_j`` with ``b ~ U(0, 0.5)``.
        seed: shape-(2,) int seed of the stateless random draws.
        row_offset, total_rows: the draws are made for ``total_rows`` queries (the global batch)
            and rows ``row_offset:row_offset + B`` used, so a replica's queries get the same draws
            as on one device.

    Returns a dict: ``negatives`` (B, s + s', d), normalised, without gradient; and what was
    drawn: ``alpha`` (B, s), ``index_a``/``index_b`` (B, s) and ``beta`` (B, s'), ``index_q``
    (B, s'), indices into ``queue``; ``hardest`` (B, N) the top-N indices.
    """
    q = tf.stop_gradient(tf.cast(q, tf.float32))
    queue = tf.stop_gradient(tf.cast(queue, tf.float32))
    n = int(min(n, queue.shape[0]))
    batch = tf.shape(q)[0]
    total = batch if total_rows is None else total_rows
    rows = slice(row_offset, row_offset + batch)

    def draw(shape_tail, key, low, high, dtype=tf.float32):
        values = tf.random.stateless_uniform((total, *shape_tail), key, low, high, dtype=dtype)
        return values[rows]

    similarity = tf.matmul(q, queue, transpose_b=True)
    hardest = tf.math.top_k(similarity, k=n).indices  # (B, N)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=5)
    out = {"hardest": hardest}
    parts = []
    if s > 0:
        pos_a = draw((s,), seeds[0], 0, n, tf.int32)
        if n > 1:
            step = draw((s,), seeds[1], 1, n, tf.int32)
            pos_b = (pos_a + step) % n
        else:
            pos_b = pos_a
        index_a = tf.gather(hardest, pos_a, batch_dims=1)
        index_b = tf.gather(hardest, pos_b, batch_dims=1)
        alpha = draw((s,), seeds[2], 0.0, 1.0)
        first, second = tf.gather(queue, index_a), tf.gather(queue, index_b)
        mixed = alpha[..., None] * first + (1.0 - alpha[..., None]) * second
        parts.append(tf.math.l2_normalize(mixed, axis=-1))
        out.update(alpha=alpha, index_a=index_a, index_b=index_b)
    if s_prime > 0:
        pos_q = draw((s_prime,), seeds[3], 0, n, tf.int32)
        index_q = tf.gather(hardest, pos_q, batch_dims=1)
        beta = draw((s_prime,), seeds[4], 0.0, 0.5)
        mixed = beta[..., None] * q[:, None, :] + (1.0 - beta[..., None]) * tf.gather(queue, index_q)
        parts.append(tf.math.l2_normalize(mixed, axis=-1))
        out.update(beta=beta, index_q=index_q)
    d = tf.shape(q)[1]
    negatives = tf.concat(parts, axis=1) if parts else tf.zeros((batch, 0, d))
    out["negatives"] = tf.stop_gradient(negatives)
    return out


def moco_logits(q, k, queue, temperature: float, *, synthetic=None, eqco_alpha: float | None = None):
    """InfoNCE logits of MoCo: column 0 the positive ``q . k``, then ``q . queue`` and ``q . synthetic``,
    all divided by ``temperature``; with ``eqco_alpha`` the EqCo shift over all negatives.

    >>> import numpy as np
    >>> q = k = np.array([[1.0, 0.0]], "float32")
    >>> moco_logits(q, k, np.array([[0.0, 1.0]], "float32"), 0.5).numpy().tolist()
    [[2.0, 0.0]]
    """
    q = tf.cast(q, tf.float32)
    positive = tf.reduce_sum(q * tf.cast(k, tf.float32), axis=1, keepdims=True)
    negative = tf.matmul(q, tf.cast(queue, tf.float32), transpose_b=True)
    columns = [positive, negative]
    if synthetic is not None:
        columns.append(tf.einsum("bd,bsd->bs", q, tf.cast(synthetic, tf.float32)))
    logits = tf.concat(columns, axis=1) / temperature
    if eqco_alpha:
        logits = eqco_shift(logits, eqco_alpha)
    return logits


def moco_loss(logits):
    """Per-query InfoNCE of MoCo (He et al. 2020): cross-entropy with the positive in column 0 of
    :func:`moco_logits`.

    >>> import numpy as np
    >>> q = k = np.array([[1.0, 0.0]], "float32")
    >>> queue = np.array([[0.0, 1.0]], "float32")
    >>> round(float(moco_loss(moco_logits(q, k, queue, 1.0))[0]), 4)   # -log(e / (e + 1))
    0.3133
    """
    labels = tf.zeros(tf.shape(logits)[:1], dtype=tf.int32)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
