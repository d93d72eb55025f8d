"""Batched TensorFlow helpers for augmentation ops (:mod:`patchcfg.data.ops`): stateless random draws,
per-image selection, resampling and separable filtering. Every random draw is keyed by a seed from
:class:`Seeds`, which :class:`~patchcfg.data.augment.Augmenter` derives per batch and per step."""

from __future__ import annotations

import keras
import tensorflow as tf

# --------------------------------------------------------------------------- random draws


class Seeds(keras.random.SeedGenerator):
    """A stream of stateless seeds derived from one seed tensor; usable as a Keras ``seed``.

    Keras random ops accept a ``SeedGenerator`` and call ``next()`` on it; this one owns no
    variable, so it can be created per batch inside a ``tf.data`` function.
    """

    def __init__(self, seed):  # deliberately no SeedGenerator state variable
        self._base = tf.cast(seed, tf.int64)
        self._count = 0

    def next(self, ordered=True):
        self._count += 1
        return tf.random.experimental.stateless_fold_in(self._base, self._count)


def uniform(seeds, shape, lo, hi):
    return tf.random.stateless_uniform(shape, seed=seeds.next(), minval=lo, maxval=hi)


def pair(value):
    """(low, high) from a number (fixed value) or a [low, high] list."""
    if isinstance(value, (list, tuple)):
        return float(value[0]), float(value[1])
    return float(value), float(value)


def sample(seeds, batch, value, shape_tail=()):
    """(B, *shape_tail) draws uniform in ``value`` (a number: that value)."""
    lo, hi = pair(value)
    shape = tf.concat([[batch], tf.constant(shape_tail, tf.int32)], 0) if shape_tail else [batch]
    if lo == hi:
        return tf.fill(shape, tf.constant(lo, tf.float32))
    return uniform(seeds, shape, lo, hi)


def chance(p, true=0.5):
    """A probability from a recipe value: true -> ``true``, false -> 0, a number as it is."""
    if isinstance(p, bool):
        return true if p else 0.0
    return p


def coin(seeds, batch, p):
    """(B,) bool: True with probability p."""
    if p >= 1:
        return tf.ones([batch], tf.bool)
    if p <= 0:
        return tf.zeros([batch], tf.bool)
    return uniform(seeds, [batch], 0.0, 1.0) < p


def select(mask, a, b):
    """Per image: ``a`` where ``mask`` (B,) is True, else ``b`` (broadcast to a common shape).

    An exact blend ``a * m + b * (1 - m)`` with m in {0, 1}: on CPU it costs a third of a ``tf.where``
    whose condition broadcasts over the image (both branches are finite images here).
    """
    m = tf.reshape(tf.cast(mask, a.dtype), [-1, 1, 1, 1])
    return a * m + b * (1.0 - m)


def with_prob(p, fn):
    """``fn(images, seeds)`` on a share ``p`` of the images, the others unchanged."""
    def run(images, seeds):
        return select(coin(seeds, tf.shape(images)[0], p), fn(images, seeds), images)
    return run


def per_channel_sample(seeds, batch, channels, value, per_channel):
    """(B, 1, 1, C) factors: one per image, or one per channel for a `per_channel` share of images."""
    single = tf.reshape(sample(seeds, batch, value), [-1, 1, 1, 1])
    if per_channel is False or per_channel == 0:
        return tf.broadcast_to(single, tf.stack([batch, 1, 1, channels]))
    multi = tf.reshape(sample(seeds, batch, value, (channels,)), [-1, 1, 1, channels])
    p = 1.0 if per_channel is True else float(per_channel)
    return select(coin(seeds, batch, p), multi, tf.broadcast_to(single, tf.shape(multi)))


# --------------------------------------------------------------------------- geometry

_TF_FILL = {"constant": "CONSTANT", "edge": "NEAREST", "symmetric": "REFLECT", "reflect": "REFLECT",
            "wrap": "WRAP", "nearest": "NEAREST"}


def project(images, matrices, *, fill_mode="constant", fill_value=0.0, interpolation="bilinear"):
    """Warp with per-image 3x3 matrices that map input to output pixel coordinates (x, y, 1)."""
    inverse = tf.linalg.inv(matrices)
    inverse = inverse / inverse[:, 2:3, 2:3]
    transforms = tf.reshape(inverse, [-1, 9])[:, :8]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3],
        fill_value=tf.constant(fill_value, tf.float32), interpolation=interpolation.upper(),
        fill_mode=_TF_FILL[fill_mode])


def crop_resize(images, boxes):
    """Per-image crops (B, 4) of [y0, x0, y1, x1] in relative coordinates, resized back."""
    batch = tf.shape(images)[0]
    size = tf.shape(images)[1:3]
    return tf.image.crop_and_resize(images, boxes, tf.range(batch), size, method="bilinear")


def rect_mask(batch, height, width, y0, x0, y1, x1):
    """(B, H, W, 1) float mask, 1 inside [y0, y1) x [x0, x1) (per-image bounds, in pixels)."""
    ys = tf.cast(tf.range(height), tf.float32)[None, :, None]
    xs = tf.cast(tf.range(width), tf.float32)[None, None, :]

    def col(t):
        return tf.reshape(t, [-1, 1, 1])

    inside = (ys >= col(y0)) & (ys < col(y1)) & (xs >= col(x0)) & (xs < col(x1))
    return tf.cast(inside, tf.float32)[..., None]


# --------------------------------------------------------------------------- filters

def depthwise_per_image(images, kernels_y, kernels_x):
    """Separable filtering with a different 1-D kernel per image; reflect-padded borders.

    kernels_*: (B, K) with odd K. Images are folded into the channel axis so one depthwise
    convolution filters the whole batch.
    """
    batch = tf.shape(images)[0]
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    ky, kx = kernels_y.shape[1], kernels_x.shape[1]
    ry, rx = ky // 2, kx // 2
    padded = tf.pad(images, [[0, 0], [ry, ry], [rx, rx], [0, 0]], mode="REFLECT")
    folded = tf.reshape(tf.transpose(padded, [1, 2, 0, 3]), [1, height + 2 * ry, width + 2 * rx, -1])
    ker_y = tf.reshape(tf.transpose(tf.repeat(kernels_y[:, :, None], channels, axis=2), [1, 0, 2]),
                       [ky, 1, -1, 1])
    ker_x = tf.reshape(tf.transpose(tf.repeat(kernels_x[:, :, None], channels, axis=2), [1, 0, 2]),
                       [1, kx, -1, 1])
    out = tf.nn.depthwise_conv2d(folded, ker_y, [1, 1, 1, 1], "VALID")
    out = tf.nn.depthwise_conv2d(out, ker_x, [1, 1, 1, 1], "VALID")
    out = tf.reshape(out, [height, width, batch, channels])
    return tf.transpose(out, [2, 0, 1, 3])


# --------------------------------------------------------------------------- colour

def gray(images):
    """Luminance for RGB, the channel mean otherwise; same number of channels out."""
    channels = images.shape[-1]
    if channels == 3:
        luma = tf.image.rgb_to_grayscale(images)
    else:
        luma = tf.reduce_mean(images, -1, keepdims=True)
    return tf.repeat(luma, channels, axis=-1)


def adjust_hsv(images, saturation=None, hue=None, sat_add=None):
    """Per image: saturation scaled by ``saturation`` and/or shifted by ``sat_add``, hue turned by ``hue``."""
    hsv = tf.image.rgb_to_hsv(tf.clip_by_value(images, 0.0, 1.0))
    h, s, v = tf.unstack(hsv, axis=-1)
    if saturation is not None:
        s = s * tf.reshape(saturation, [-1, 1, 1])
    if sat_add is not None:
        s = s + tf.reshape(sat_add, [-1, 1, 1])
    if hue is not None:
        h = tf.math.floormod(h + tf.reshape(hue, [-1, 1, 1]), 1.0)
    return tf.image.hsv_to_rgb(tf.stack([h, tf.clip_by_value(s, 0.0, 1.0), v], -1))
