"""BYOL's loss: the online prediction regresses the target projection of the other view.

Grill, Strub, Altché, Tallec, Richemond, Buchatskaya, Doersch, Avila Pires, Guo, Gheshlaghi Azar,
Piot, Kavukcuoglu, Munos & Valko, "Bootstrap Your Own Latent: A New Approach to Self-Supervised
Learning", NeurIPS 2020, eq. (2): with ``p`` the online prediction and ``t`` the target projection,
both L2-normalised, ``L = ||p - t||^2 = 2 - 2 cos(p, t)``; the loss is symmetrised by feeding each
view to both networks, ``L_BYOL = L(p1, t2) + L(p2, t1)``. The target gets no gradient (stop-gradient);
there are no negatives.
"""

from __future__ import annotations

import tensorflow as tf


def normalized_regression(p, t):
    """``2 - 2 cos(p, t)`` per row, the squared distance of the L2-normalised rows; no gradient to ``t``.

    >>> import numpy as np
    >>> [round(float(v), 4) for v in normalized_regression(np.array([[1.0, 0.0], [1.0, 0.0]], "float32"),
    ...                                                     np.array([[2.0, 0.0], [0.0, 1.0]], "float32"))]
    [0.0, 2.0]
    """
    p = tf.math.l2_normalize(tf.cast(p, tf.float32), axis=-1)
    t = tf.math.l2_normalize(tf.stop_gradient(tf.cast(t, tf.float32)), axis=-1)
    return 2.0 - 2.0 * tf.reduce_sum(p * t, axis=-1)


def byol_loss(p1, p2, t1, t2):
    """Per-example symmetric BYOL loss (Grill et al. 2020): ``(2 - 2 cos(p1, t2)) + (2 - 2 cos(p2, t1))``,
    shape ``(n,)``; ``p`` online predictions, ``t`` target projections of the same images' views.

    >>> import numpy as np
    >>> p = np.array([[1.0, 0.0]], "float32")
    >>> round(float(byol_loss(p, p, np.array([[0.0, 1.0]], "float32"), p)[0]), 4)   # (2 - 0) + (2 - 2)
    2.0
    """
    return normalized_regression(p1, t2) + normalized_regression(p2, t1)
