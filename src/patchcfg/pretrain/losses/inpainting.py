"""The context encoder's reconstruction loss: the hidden pixels' squared error, and the visible ones'.

Pathak, Krähenbühl, Donahue, Darrell & Efros, "Context Encoders: Feature Learning by Inpainting",
CVPR 2016: the mean squared error over the hidden region (the paper's reconstruction loss), here
plus ``context_weight`` times the error over the visible pixels (0 = the paper's).
"""

from __future__ import annotations

import tensorflow as tf


def inpainting_loss(predicted, images, masks, context_weight: float):
    """Per-image ``(loss, hidden MSE, visible MSE)``: the mean squared error over the hidden pixels,
    plus ``context_weight`` times the error over the visible ones.

    >>> import numpy as np
    >>> images = np.zeros((1, 2, 2, 1), "float32")
    >>> masks = np.array([[[[1.0], [0.0]], [[0.0], [0.0]]]], "float32")   # one hidden pixel of four
    >>> predicted = images + 0.5
    >>> [round(float(v[0]), 4) for v in inpainting_loss(predicted, images, masks, context_weight=0.1)]
    [0.275, 0.25, 0.25]
    """
    error = tf.reduce_mean(tf.square(tf.cast(predicted, tf.float32) - images), axis=-1, keepdims=True)
    hidden = tf.reduce_sum(error * masks, [1, 2, 3]) / tf.maximum(tf.reduce_sum(masks, [1, 2, 3]), 1.0)
    visible = tf.reduce_sum(error * (1.0 - masks), [1, 2, 3]) / tf.maximum(
        tf.reduce_sum(1.0 - masks, [1, 2, 3]), 1.0)
    return hidden + context_weight * visible, hidden, visible
