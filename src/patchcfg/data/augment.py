"""Augmentation recipes compiled to batched TensorFlow ops that run inside the ``tf.data`` graph.

``build_augmenter(aug_cfg, imshape, channels, seed)`` returns an :class:`Augmenter`: a callable
``images -> images`` on float32 batches ``(B, H, W, C)`` in [0, 1], with no Python per image.
Recipe names and parameters are documented in :mod:`patchcfg.data.recipes`.

Randomness is stateless: every random draw is keyed by a seed tensor of shape ``[2]``.
``augmenter(images, seed)`` with the same seed gives the same result, on any thread and in any
order, which is what makes a parallel ``tf.data`` pipeline reproducible (the dataset builders in
:mod:`patchcfg.data.loading` key each batch by a seed drawn from ``tf.data.Dataset.random``).
Called without a seed, the augmenter draws the next one from its own counter, so successive calls
differ and a fresh augmenter with the same ``seed`` repeats the sequence.

Keras 3 preprocessing layers (``RandomRotation``, ``RandomErasing``, ...) are driven through
their public ``get_random_transformation(data, seed=...)`` / ``transform_images`` methods with a
seed object derived from the batch seed, so they are reproducible in the same way. The other names
are small batched TensorFlow ops written here (per-image parameters, one resampling per affine).
"""

from __future__ import annotations

import math
import random as _pyrandom

import keras
import numpy as np
import tensorflow as tf

from patchcfg.data.recipes import GEOMETRIC, OPS, expand_recipe, is_noop
from patchcfg.errors import ConfigError

__all__ = ["Augmenter", "build_augmenter", "rect_mask"]


class _Seeds(keras.random.SeedGenerator):
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


# --------------------------------------------------------------------------- random helpers

def _uniform(seeds, shape, lo, hi):
    return tf.random.stateless_uniform(shape, seed=seeds.next(), minval=lo, maxval=hi)


def _pair(value):
    """(low, high) from a number (fixed value) or a [low, high] list."""
    if isinstance(value, (list, tuple)):
        return float(value[0]), float(value[1])
    return float(value), float(value)


def _sample(seeds, batch, value, shape_tail=()):
    lo, hi = _pair(value)
    shape = tf.concat([[batch], tf.constant(shape_tail, tf.int32)], 0) if shape_tail else [batch]
    if lo == hi:
        return tf.fill(shape, tf.constant(lo, tf.float32))
    return _uniform(seeds, shape, lo, hi)


def _coin(seeds, batch, p):
    """(B,) bool: True with probability p."""
    if p >= 1:
        return tf.ones([batch], tf.bool)
    if p <= 0:
        return tf.zeros([batch], tf.bool)
    return _uniform(seeds, [batch], 0.0, 1.0) < p


def _select(mask, a, b):
    """Per image: ``a`` where ``mask`` (B,) is True, else ``b`` (broadcast to a common shape).

    An exact blend ``a * m + b * (1 - m)`` with m in {0, 1}: on CPU it costs a third of a ``tf.where``
    whose condition broadcasts over the image (both branches are finite images here).
    """
    m = tf.reshape(tf.cast(mask, a.dtype), [-1, 1, 1, 1])
    return a * m + b * (1.0 - m)


def _per_channel_sample(seeds, batch, channels, value, per_channel):
    """(B, 1, 1, C) factors: one per image, or one per channel for a `per_channel` share of images."""
    single = tf.reshape(_sample(seeds, batch, value), [-1, 1, 1, 1])
    if per_channel is False or per_channel == 0:
        return tf.broadcast_to(single, tf.stack([batch, 1, 1, channels]))
    multi = tf.reshape(_sample(seeds, batch, value, (channels,)), [-1, 1, 1, channels])
    p = 1.0 if per_channel is True else float(per_channel)
    return _select(_coin(seeds, batch, p), multi, tf.broadcast_to(single, tf.shape(multi)))


def _gray(images):
    """Luminance for RGB, the channel mean otherwise; same number of channels out."""
    channels = images.shape[-1]
    if channels == 3:
        gray = tf.image.rgb_to_grayscale(images)
    else:
        gray = tf.reduce_mean(images, -1, keepdims=True)
    return tf.repeat(gray, channels, axis=-1)


# --------------------------------------------------------------------------- geometry

_TF_FILL = {"constant": "CONSTANT", "edge": "NEAREST", "symmetric": "REFLECT", "reflect": "REFLECT",
            "wrap": "WRAP", "nearest": "NEAREST"}


def _project(images, matrices, *, fill_mode="constant", fill_value=0.0, interpolation="bilinear"):
    """Warp with per-image 3x3 matrices that map input to output pixel coordinates (x, y, 1)."""
    inverse = tf.linalg.inv(matrices)
    inverse = inverse / inverse[:, 2:3, 2:3]
    transforms = tf.reshape(inverse, [-1, 9])[:, :8]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3],
        fill_value=tf.constant(fill_value, tf.float32), interpolation=interpolation.upper(),
        fill_mode=_TF_FILL[fill_mode])


def _affine_matrices(batch, height, width, *, sx, sy, tx, ty, rot, shx, shy):
    """Per-image forward matrices about the image centre (angles in radians, shifts in pixels)."""
    one, zero = tf.ones([batch]), tf.zeros([batch])

    def mat(rows):
        return tf.reshape(tf.stack([v for row in rows for v in row], axis=-1), [-1, 3, 3])

    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    to_origin = mat([[one, zero, -cx * one], [zero, one, -cy * one], [zero, zero, one]])
    back = mat([[one, zero, cx * one + tx], [zero, one, cy * one + ty], [zero, zero, one]])
    scale = mat([[sx, zero, zero], [zero, sy, zero], [zero, zero, one]])
    shear = mat([[one, tf.tan(shx), zero], [tf.tan(shy), one, zero], [zero, zero, one]])
    cos, sin = tf.cos(rot), tf.sin(rot)
    rotate = mat([[cos, -sin, zero], [sin, cos, zero], [zero, zero, one]])
    return back @ rotate @ shear @ scale @ to_origin


def _xy(value, default):
    if isinstance(value, dict):
        return value.get("x", default), value.get("y", default)
    return value, value


def _make_affine(params, *, scale=1.0, translate=0.0, rotate=0.0, shear=0.0, same_scale=True):
    def run(images, seeds):
        batch = tf.shape(images)[0]
        height, width = images.shape[1], images.shape[2]
        scale_x, scale_y = _xy(scale, 1.0)
        sx = _sample(seeds, batch, scale_x)
        sy = sx if (same_scale and not isinstance(scale, dict)) else _sample(seeds, batch, scale_y)
        trans_x, trans_y = _xy(translate, 0.0)
        tx = _sample(seeds, batch, trans_x) * width
        ty = _sample(seeds, batch, trans_y) * height
        rot = _sample(seeds, batch, rotate) * (math.pi / 180)
        shear_x, shear_y = _xy(shear, 0.0)
        shx = _sample(seeds, batch, shear_x) * (math.pi / 180)
        shy = (_sample(seeds, batch, shear_y) * (math.pi / 180)) if isinstance(shear, dict) \
            else tf.zeros([batch])
        matrices = _affine_matrices(batch, height, width, sx=sx, sy=sy, tx=tx, ty=ty, rot=rot,
                                    shx=shx, shy=shy)
        return _project(images, matrices, fill_mode=params["mode"], fill_value=params["cval"] / 255.0,
                        interpolation="bilinear" if params["order"] == 1 else "nearest")
    return run


def _crop_resize(images, boxes):
    batch = tf.shape(images)[0]
    size = tf.shape(images)[1:3]
    return tf.image.crop_and_resize(images, boxes, tf.range(batch), size, method="bilinear")


def _flip(axis, p):
    def run(images, seeds):
        flip = _coin(seeds, tf.shape(images)[0], p)
        return _select(flip, tf.reverse(images, [axis]), images)
    return run


def _rot90(p):
    def run(images, seeds):
        batch = tf.shape(images)[0]
        square = images.shape[1] == images.shape[2]
        rotate = _coin(seeds, batch, p)
        turns = tf.random.stateless_uniform([batch], seed=seeds.next(), minval=1, maxval=4, dtype=tf.int32)
        out = images
        if square:
            transposed = tf.transpose(images, [0, 2, 1, 3])
            r90 = tf.reverse(transposed, [2])          # 90 degrees counter-clockwise
            r180 = tf.reverse(images, [1, 2])
            r270 = tf.reverse(transposed, [1])
            out = _select(tf.equal(turns, 1), r90, out)
            out = _select(tf.equal(turns, 2), r180, out)
            out = _select(tf.equal(turns, 3), r270, out)
        else:
            out = tf.reverse(images, [1, 2])
        return _select(rotate, out, images)
    return run


def _zoom_scale(params):
    lo_ratio, hi_ratio = (math.log(r) for r in params["ratio"])
    scale = float(params["scale"])

    def run(images, seeds):
        batch = tf.shape(images)[0]
        area = _uniform(seeds, [batch], scale, 1.0)
        ratio = tf.exp(_uniform(seeds, [batch], lo_ratio, hi_ratio))
        w = tf.minimum(tf.sqrt(area * ratio), 1.0)
        h = tf.minimum(tf.sqrt(area / ratio), 1.0)
        y0 = _uniform(seeds, [batch], 0.0, 1.0) * (1.0 - h)
        x0 = _uniform(seeds, [batch], 0.0, 1.0) * (1.0 - w)
        return _crop_resize(images, tf.stack([y0, x0, y0 + h, x0 + w], 1))
    return run


def _center_zoom(scale):
    def run(images, seeds):
        z = _uniform(seeds, [tf.shape(images)[0]], 0.0, (1.0 - scale) / 2.0)
        return _crop_resize(images, tf.stack([z, z, 1 - z, 1 - z], 1))
    return run


def _crop(params):
    def run(images, seeds):
        batch = tf.shape(images)[0]
        if params["sample_independently"]:
            top, left, bottom, right = (_sample(seeds, batch, params["percent"]) for _ in range(4))
        else:
            top = left = bottom = right = _sample(seeds, batch, params["percent"])
        return _crop_resize(images, tf.stack([top, left, 1 - bottom, 1 - right], 1))
    return run


def _shear(factor):
    def run(images, seeds):
        batch = tf.shape(images)[0]
        height, width = images.shape[1], images.shape[2]
        shx = _uniform(seeds, [batch], -factor, factor)
        shy = _uniform(seeds, [batch], -factor, factor)
        one, zero = tf.ones([batch]), tf.zeros([batch])
        # output -> input map as in patchwork (shear about the centre)
        inverse = tf.reshape(tf.stack([one, shx, -width * shx / 2, shy, one, -height * shy / 2,
                                       zero, zero, one], -1), [-1, 3, 3])
        return _project(images, tf.linalg.inv(inverse), fill_mode="reflect")
    return run


# --------------------------------------------------------------------------- filters

def _depthwise_per_image(images, kernels_y, kernels_x):
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


def _gaussian_kernels(sigma, radius):
    grid = tf.cast(tf.range(-radius, radius + 1), tf.float32)[None, :]
    sigma = tf.maximum(sigma, 1e-3)[:, None]
    kernel = tf.exp(-(grid ** 2) / (2.0 * sigma ** 2))
    return kernel / tf.reduce_sum(kernel, 1, keepdims=True)


def _blur(images, sigma, radius):
    kernels = _gaussian_kernels(sigma, radius)
    return _depthwise_per_image(images, kernels, kernels)


def _max_radius(images, wanted):
    return int(max(1, min(wanted, (min(images.shape[1], images.shape[2]) - 1) // 2)))


def _gaussian_blur_patchwork(params):
    def run(images, seeds):
        batch = tf.shape(images)[0]
        radius = _max_radius(images, images.shape[1] // 20)
        sigma = _sample(seeds, batch, params["sigma"])
        return _select(_coin(seeds, batch, params["p"]), _blur(images, sigma, radius), images)
    return run


def _gaussian_blur_imgaug(params):
    _, hi = _pair(params["sigma"])

    def run(images, seeds):
        radius = _max_radius(images, math.ceil(3 * hi))
        return _blur(images, _sample(seeds, tf.shape(images)[0], params["sigma"]), radius)
    return run


def _sharpen(params):
    def run(images, seeds):
        batch = tf.shape(images)[0]
        alpha = tf.reshape(_sample(seeds, batch, params["alpha"]), [-1, 1, 1, 1])
        light = tf.reshape(_sample(seeds, batch, params["lightness"]), [-1, 1, 1, 1])
        box = tf.ones([batch, 3])
        neighbours = _depthwise_per_image(images, box, box) - images
        effect = (8.0 + light) * images - neighbours
        return (1 - alpha) * images + alpha * effect
    return run


def _sobel(p):
    def run(images, seeds):
        batch = tf.shape(images)[0]
        edges = tf.reduce_mean(tf.image.sobel_edges(images), axis=[-1, -2], keepdims=False)
        lo = tf.reduce_min(edges, [1, 2], keepdims=True)
        hi = tf.reduce_max(edges, [1, 2], keepdims=True)
        edges = (edges - lo) / (hi - lo + 1e-7)
        edges = tf.repeat(edges[..., None], images.shape[-1], axis=-1)
        return _select(_coin(seeds, batch, p), edges, images)
    return run


# --------------------------------------------------------------------------- colour

def _adjust_contrast(images, factor):
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return (images - mean) * tf.reshape(factor, [-1, 1, 1, 1]) + mean


def _adjust_hsv(images, saturation=None, hue=None, sat_add=None):
    hsv = tf.image.rgb_to_hsv(tf.clip_by_value(images, 0.0, 1.0))
    h, s, v = tf.unstack(hsv, axis=-1)
    if saturation is not None:
        s = s * tf.reshape(saturation, [-1, 1, 1])
    if sat_add is not None:
        s = s + tf.reshape(sat_add, [-1, 1, 1])
    if hue is not None:
        h = tf.math.floormod(h + tf.reshape(hue, [-1, 1, 1]), 1.0)
    return tf.image.hsv_to_rgb(tf.stack([h, tf.clip_by_value(s, 0.0, 1.0), v], -1))


# RGB <-> YIQ (NTSC): Y is luma; hue is the angle and saturation the length of (I, Q).
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)


def _saturation_hue_matrices(saturation, hue):
    """(B, 3, 3) matrices acting on RGB row vectors: saturation scales the chroma (a blend with the
    luma image, as torchvision's ``adjust_saturation``) and ``hue`` (in turns) rotates it about the
    grey axis (as DALI's ``hue``): ``YIQ_TO_RGB . diag(1, s R(hue)) . RGB_TO_YIQ``."""
    angle = 2.0 * math.pi * hue
    cos, sin = saturation * tf.cos(angle), saturation * tf.sin(angle)
    one, zero = tf.ones_like(hue), tf.zeros_like(hue)
    chroma = tf.reshape(tf.stack([one, zero, zero, zero, cos, -sin, zero, sin, cos], -1), [-1, 3, 3])
    # for column vectors M = inv(T) C T; images are rows (x @ M^T)
    matrices = tf.constant(_YIQ_TO_RGB) @ chroma @ tf.constant(_RGB_TO_YIQ)
    return tf.transpose(matrices, [0, 2, 1])


def _jitter(strength):
    """SimCLR's colour jitter (Chen et al. 2020, appendix A) as two batched linear maps per image.

    Brightness and contrast (about each channel's mean) are one affine map, clipped to [0, 1];
    saturation and hue are one 3x3 colour matrix (:func:`_saturation_hue_matrices`). Compared with
    HSV round trips and per-op clipping this is four times cheaper on CPU, which keeps the input
    pipeline of contrastive pretraining off the critical path.
    """
    delta, hue = 0.8 * strength, 0.2 * strength

    def run(images, seeds):
        batch = tf.shape(images)[0]
        low = max(1.0 - delta, 0.0)
        brightness = tf.reshape(_uniform(seeds, [batch], low, 1.0 + delta), [-1, 1, 1, 1])
        contrast = tf.reshape(_uniform(seeds, [batch], low, 1.0 + delta), [-1, 1, 1, 1])
        mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
        x = tf.clip_by_value((images - mean) * (brightness * contrast) + mean * brightness, 0.0, 1.0)
        if images.shape[-1] != 3:
            return x
        matrices = _saturation_hue_matrices(_uniform(seeds, [batch], low, 1.0 + delta),
                                            _uniform(seeds, [batch], -hue, hue))
        x = tf.reshape(tf.linalg.matmul(tf.reshape(x, [batch, -1, 3]), matrices), tf.shape(images))
        return tf.clip_by_value(x, 0.0, 1.0)
    return run


def _factor_op(kind, delta):
    def run(images, seeds):
        batch = tf.shape(images)[0]
        if kind == "brightness":
            return images * tf.reshape(_uniform(seeds, [batch], max(1.0 - delta, 0.0), 1.0 + delta), [-1, 1, 1, 1])
        if kind == "contrast":
            return _adjust_contrast(images, _uniform(seeds, [batch], 1.0 - delta, 1.0 + delta))
        if kind == "saturation":
            return _adjust_hsv(images, saturation=_uniform(seeds, [batch], 1.0 - delta, 1.0 + delta))
        return _adjust_hsv(images, hue=_uniform(seeds, [batch], -delta, delta))
    return run


def _with_prob(p, fn):
    def run(images, seeds):
        return _select(_coin(seeds, tf.shape(images)[0], p), fn(images, seeds), images)
    return run


def _solarize_patchwork(images, seeds):
    threshold = tf.reshape(_uniform(seeds, [tf.shape(images)[0]], 0.0, 1.0), [-1, 1, 1, 1])
    return tf.where(images < threshold, images, 1.0 - images)


def _autocontrast(images, seeds):
    shifted = images - tf.reduce_mean(images, [1, 2, 3], keepdims=True)
    top = tf.reduce_max(shifted, [1, 2, 3], keepdims=True)
    return tf.clip_by_value(shifted / (top + 0.01), 0.0, 1.0)


def _noise(std):
    def run(images, seeds):
        return images + tf.random.stateless_normal(tf.shape(images), seed=seeds.next(), stddev=std)
    return run


def rect_mask(batch, height, width, y0, x0, y1, x1):
    """(B, H, W, 1) float mask, 1 inside [y0, y1) x [x0, x1) (per-image bounds, in pixels)."""
    ys = tf.cast(tf.range(height), tf.float32)[None, :, None]
    xs = tf.cast(tf.range(width), tf.float32)[None, None, :]

    def col(t):
        return tf.reshape(t, [-1, 1, 1])

    inside = (ys >= col(y0)) & (ys < col(y1)) & (xs >= col(x0)) & (xs < col(x1))
    return tf.cast(inside, tf.float32)[..., None]


def _mask_patchwork(images, seeds):
    batch = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    dh = tf.floor(_uniform(seeds, [batch], max(1, height // 20), max(2, height // 2)))
    dw = tf.floor(_uniform(seeds, [batch], max(1, height // 20), max(2, width // 2)))
    y0 = tf.floor(_uniform(seeds, [batch], 0.0, 1.0) * (height - dh))
    x0 = tf.floor(_uniform(seeds, [batch], 0.0, 1.0) * (width - dw))
    mask = rect_mask(batch, height, width, y0, x0, y0 + dh, x0 + dw)
    return images * (1 - mask) + 0.5 * mask


def _pixel_mask(drop):
    def run(images, seeds):
        shape = tf.concat([tf.shape(images)[:3], [1]], 0)
        keep = tf.cast(tf.random.stateless_uniform(shape, seed=seeds.next()) >= drop, tf.float32)
        return images * keep
    return run


def _dropout(params):
    def run(images, seeds):
        batch = tf.shape(images)[0]
        p = tf.reshape(_sample(seeds, batch, params["p"]), [-1, 1, 1, 1])
        one = tf.random.stateless_uniform(tf.concat([tf.shape(images)[:3], [1]], 0), seed=seeds.next())
        per = tf.random.stateless_uniform(tf.shape(images), seed=seeds.next())
        pc = params["per_channel"]
        noise = one if pc is False or pc == 0 else _select(
            _coin(seeds, batch, 1.0 if pc is True else pc), per, tf.broadcast_to(one, tf.shape(per)))
        return tf.where(noise < p, 0.0, images)
    return run


def _coarse_dropout(params):
    def run(images, seeds):
        batch = tf.shape(images)[0]
        height, width, channels = images.shape[1], images.shape[2], images.shape[3]
        p = tf.reshape(_sample(seeds, batch, params["p"]), [-1, 1, 1, 1])
        size = _sample(seeds, batch, params["size_percent"])
        cells_y = tf.maximum(1.0, tf.round(size * height))
        cells_x = tf.maximum(1.0, tf.round(size * width))
        cy = tf.cast(tf.floor(tf.cast(tf.range(height), tf.float32)[None, :] * cells_y[:, None] / height), tf.int32)
        cx = tf.cast(tf.floor(tf.cast(tf.range(width), tf.float32)[None, :] * cells_x[:, None] / width), tf.int32)
        pc = params["per_channel"]
        depth = 1 if pc is False or pc == 0 else channels
        grid = tf.random.stateless_uniform(tf.stack([batch, height, width, depth]), seed=seeds.next())
        rows = tf.gather(grid, cy, axis=1, batch_dims=1)
        cells = tf.gather(rows, cx, axis=2, batch_dims=1)
        if depth > 1 and pc is not True:
            cells = _select(_coin(seeds, batch, float(pc)), cells, tf.broadcast_to(cells[..., :1], tf.shape(cells)))
        return tf.where(cells < p, 0.0, images)
    return run


def _cutout(params):
    def run(images, seeds):
        batch = tf.shape(images)[0]
        height, width = images.shape[1], images.shape[2]
        out = images
        for _ in range(int(params["nb_iterations"])):
            side = _sample(seeds, batch, params["size"]) * min(height, width)
            cy = _uniform(seeds, [batch], 0.0, float(height))
            cx = _uniform(seeds, [batch], 0.0, float(width))
            mask = rect_mask(batch, height, width, cy - side / 2, cx - side / 2, cy + side / 2, cx + side / 2)
            fill = tf.reshape(_sample(seeds, batch, params["cval"]) / 255.0, [-1, 1, 1, 1])
            out = out * (1 - mask) + fill * mask
        return out
    return run


def _imgaug_color(name, params):
    def run(images, seeds):
        batch = tf.shape(images)[0]
        channels = images.shape[-1]
        if name == "Multiply":
            return images * _per_channel_sample(seeds, batch, channels, params["mul"], params["per_channel"])
        if name == "Add":
            return images + _per_channel_sample(seeds, batch, channels, params["value"],
                                                params["per_channel"]) / 255.0
        if name == "AdditiveGaussianNoise":
            std = _per_channel_sample(seeds, batch, channels, params["scale"], params["per_channel"]) / 255.0
            return images + std * tf.random.stateless_normal(tf.shape(images), seed=seeds.next())
        if name in ("LinearContrast", "ContrastNormalization"):
            alpha = _per_channel_sample(seeds, batch, channels, params["alpha"], params["per_channel"])
            return 0.5 + alpha * (images - 0.5)
        if name == "Invert":
            flip = _per_channel_sample(seeds, batch, channels, [0.0, 1.0], params["per_channel"]) < params["p"]
            return tf.where(flip, 1.0 - images, images)
        if name == "Solarize":
            threshold = tf.reshape(_sample(seeds, batch, params["threshold"]) / 255.0, [-1, 1, 1, 1])
            solarized = tf.where(images >= threshold, 1.0 - images, images)
            return _select(_coin(seeds, batch, params["p"]), solarized, images)
        if name == "Grayscale":
            alpha = tf.reshape(_sample(seeds, batch, params["alpha"]), [-1, 1, 1, 1])
            return (1 - alpha) * images + alpha * _gray(images)
        if name == "AddToHueAndSaturation":
            hue_v = params["value_hue"] if params["value_hue"] is not None else params["value"]
            sat_v = params["value_saturation"] if params["value_saturation"] is not None else params["value"]
            return _adjust_hsv(images, hue=_sample(seeds, batch, hue_v) / 255.0,
                               sat_add=_sample(seeds, batch, sat_v) / 255.0)
        raise AssertionError(name)  # pragma: no cover - every name is dispatched above
    return run


# --------------------------------------------------------------------------- Keras layers

def _keras_step(name, params):
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in params.items() if k != "sometimes"}
    cls = getattr(keras.layers, name)
    import inspect

    accepted = inspect.signature(cls.__init__).parameters
    if "value_range" in accepted:
        kwargs["value_range"] = (0.0, 1.0)
    if "seed" in accepted:
        kwargs["seed"] = 0
    try:
        layer = cls(**kwargs)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"augmentation.{name}: {error}") from None
    parts = [layer]
    if name == "RandomColorJitter":
        parts = [sub for sub in (layer.random_brightness, layer.random_contrast, layer.random_saturation,
                                 layer.random_hue) if sub is not None]
    for part in parts:
        part.backend.set_backend("tensorflow")

    def run(images, seeds):
        out = images
        for part in parts:
            transformation = part.get_random_transformation(out, training=True, seed=seeds)
            if name == "RandomContrast" and transformation is not None:
                transformation["contrast_factor"] = tf.cast(transformation["contrast_factor"], tf.float32)
            out = tf.cast(part.transform_images(out, transformation, training=True), tf.float32)
        return out
    return run


# --------------------------------------------------------------------------- compiling a recipe

def _compile_step(name, params, channels):
    op = OPS[name]
    if op.keras_layer:
        return _keras_step(name, params)
    p = params.get("p")
    if isinstance(p, bool):
        p = {"rot90": 0.75}.get(name, 0.5) if p else 0.0
    if name in ("flip_left_right", "Fliplr"):
        return _flip(2, p)
    if name in ("flip_up_down", "Flipud"):
        return _flip(1, p)
    if name == "rot90":
        return _rot90(p)
    if name == "shear":
        return _shear(float(params["factor"]))
    if name == "zoom_scale":
        return _zoom_scale(params)
    if name == "center_zoom_scale":
        return _center_zoom(float(params["scale"]))
    if name == "solarize":
        return _with_prob(p, _solarize_patchwork)
    if name == "jitter":
        return _jitter(float(params["strength"]))
    if name.endswith("_delta"):
        return _factor_op(name[: -len("_delta")], float(params["delta"]))
    if name == "gaussian_blur":
        return _gaussian_blur_patchwork(dict(params, p=p))
    if name == "gaussian_noise":
        return _with_prob(p, _noise(float(params["std"])))
    if name == "autocontrast":
        return _with_prob(p, _autocontrast)
    if name == "drop_color":
        # the channel mean broadcasts over the channels in the blend of _with_prob
        return _with_prob(p, lambda images, seeds: tf.reduce_mean(images, -1, keepdims=True))
    if name == "sobel_prob":
        return _sobel(p)
    if name == "mask":
        return _with_prob(p, _mask_patchwork)
    if name == "pixel_mask":
        return _with_prob(p, _pixel_mask(float(params["drop"])))
    if name == "Affine":
        return _make_affine(params, scale=params["scale"], translate=params["translate_percent"],
                            rotate=params["rotate"], shear=params["shear"])
    if name == "Rotate":
        return _make_affine(params, rotate=params["rotate"])
    if name in ("ShearX", "ShearY"):
        axis = name[-1].lower()
        return _make_affine(params, shear={axis: params["shear"]})
    if name in ("TranslateX", "TranslateY"):
        axis = name[-1].lower()
        return _make_affine(params, translate={axis: params["percent"]})
    if name in ("ScaleX", "ScaleY"):
        axis = name[-1].lower()
        return _make_affine(params, scale={axis: params["scale"]}, same_scale=False)
    if name == "GaussianBlur":
        return _gaussian_blur_imgaug(params)
    if name == "Crop":
        return _crop(params)
    if name == "Dropout":
        return _dropout(params)
    if name == "CoarseDropout":
        return _coarse_dropout(params)
    if name == "Sharpen":
        return _sharpen(params)
    if name == "Cutout":
        return _cutout(params)
    return _imgaug_color(name, params)


class Augmenter:
    """A compiled recipe: ``augmenter(images, seed=None) -> images``, batched float32 in [0, 1].

    ``steps`` is the expanded recipe ``[(name, params), ...]`` (see :func:`expand_recipe`).
    ``views(images, n, seed)`` returns ``n`` independent augmentations of the same batch (two
    views for contrastive methods). Results are clipped to [0, 1].
    """

    def __init__(self, steps, imshape, channels, seed=None):
        self.steps = [(name, params) for name, params in steps]
        self.imshape = tuple(int(v) for v in imshape)
        self.channels = int(channels)
        self.seed = int(seed) if seed is not None else _pyrandom.randint(0, 2**31 - 1)
        self._fns = [(name, _compile_step(name, params, self.channels), float(params.get("sometimes", 1.0)))
                     for name, params in self.steps]
        self._calls = None

    def __repr__(self):
        return f"Augmenter({[name for name, _ in self.steps]}, seed={self.seed})"

    def __bool__(self):
        return True

    def _next_seed(self):
        if self._calls is None:
            self._calls = tf.Variable(0, dtype=tf.int64, trainable=False, name="augment_calls")
        count = self._calls.assign_add(1)
        return tf.stack([tf.constant(self.seed, tf.int64), count])

    def __call__(self, images, seed=None, masks=None):
        """Augmented ``images``; with ``masks`` (B, H, W, K) in [0, 1], ``(images, masks)`` where the
        masks went through the same geometric steps (:data:`~patchcfg.data.recipes.GEOMETRIC`,
        same random draws) and through no other step."""
        images = tf.convert_to_tensor(images, tf.float32)
        channels = images.shape[-1]
        if masks is not None:
            masks = tf.convert_to_tensor(masks, tf.float32)
        if not self._fns:
            return images if masks is None else (images, masks)
        seed = self._next_seed() if seed is None else tf.cast(seed, tf.int64)
        for index, (name, fn, sometimes) in enumerate(self._fns):
            seeds = _Seeds(tf.random.experimental.stateless_fold_in(seed, index))
            joint = masks is not None and name in GEOMETRIC
            x = tf.concat([images, masks], axis=-1) if joint else images
            out = fn(x, seeds)
            if sometimes < 1.0:
                out = _select(_coin(seeds, tf.shape(x)[0], sometimes), out, x)
            out = tf.ensure_shape(out, x.shape)
            images, masks = (out[..., :channels], out[..., channels:]) if joint else (out, masks)
        images = tf.clip_by_value(images, 0.0, 1.0)
        return images if masks is None else (images, tf.clip_by_value(masks, 0.0, 1.0))

    def views(self, images, n=2, seed=None):
        """``n`` independently augmented views of ``images`` (a tuple of batches)."""
        seed = self._next_seed() if seed is None else tf.cast(seed, tf.int64)
        seeds = tf.random.experimental.stateless_split(seed, n)
        return tuple(self(images, seeds[i]) for i in range(n))


def build_augmenter(aug_cfg: dict | None, imshape, channels: int, seed: int | None = None) -> Augmenter:
    """Compile the ``augmentation`` config section into an :class:`Augmenter`.

    ``aug_cfg``: the section as written (``{preset: simclr}``, ``{Fliplr: 0.5, Affine: {...}}``;
    empty = ``preset: default``). ``imshape``: (height, width); ``channels``: channels per image;
    ``seed``: makes the sequence of augmentations reproducible (None: a random seed).

    Colour-only augmenters (hue, saturation, ...) that come from a preset are left out for images
    that are not RGB; written explicitly, they are a ConfigError. Steps that cannot change an
    image (probability 0) are dropped.

    Example::

        aug = build_augmenter({"preset": "simclr"}, (32, 32), 3, seed=0)
        view1, view2 = aug.views(images, 2)
    """
    explicit = set((aug_cfg or {}).keys())
    steps = []
    for name, params in expand_recipe(aug_cfg):
        op = OPS[name]
        if is_noop(name, params):
            continue
        if op.rgb_only and channels != 3:
            if name in explicit:
                raise ConfigError(f"augmentation.{name}: needs RGB images (data.channels is {channels})")
            continue
        steps.append((name, params))
    return Augmenter(steps, imshape, channels, seed=seed)


def to_uint8(images) -> np.ndarray:
    """A float batch in [0, 1] as uint8 (for previews)."""
    return np.clip(np.rint(np.asarray(images) * 255.0), 0, 255).astype(np.uint8)
