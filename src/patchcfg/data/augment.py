"""Augmentation recipes compiled to batched TensorFlow ops that run inside the ``tf.data`` graph.

``build_augmenter(aug_cfg, imshape, channels, seed)`` returns an :class:`Augmenter`: a callable
``images -> images`` on float32 batches ``(B, H, W, C)`` in [0, 1], with no Python per image.
Recipe names and parameters are documented in :mod:`patchcfg.data.recipes`; each name is an op
of :mod:`patchcfg.data.ops` (one module per op) whose builder this module calls.

Randomness is stateless: every random draw is keyed by a seed tensor of shape ``[2]``.
``augmenter(images, seed)`` with the same seed gives the same result, on any thread and in any
order, which is what makes a parallel ``tf.data`` pipeline reproducible (the dataset builders in
:mod:`patchcfg.data.loading` key each batch by a seed drawn from ``tf.data.Dataset.random``).
Called without a seed, the augmenter draws the next one from its own counter, so successive calls
differ and a fresh augmenter with the same ``seed`` repeats the sequence.

Every op draws its randomness from a :class:`~patchcfg.data.kernels.Seeds` stream derived from
the batch seed and the step's place in the recipe (Keras 3 preprocessing layers included).
"""

from __future__ import annotations

import random as _pyrandom

import numpy as np
import tensorflow as tf

from patchcfg.data.kernels import Seeds, coin, rect_mask, select
from patchcfg.data.ops import OPS
from patchcfg.data.recipes import expand_recipe
from patchcfg.errors import ConfigError

__all__ = ["Augmenter", "build_augmenter", "rect_mask"]


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
        self._fns = [(name, OPS[name].build(params), OPS[name].geometric, float(params["sometimes"]))
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
        masks went through the same geometric steps (ops registered ``geometric``, same random
        draws) and through no other step."""
        images = tf.convert_to_tensor(images, tf.float32)
        channels = images.shape[-1]
        if masks is not None:
            masks = tf.convert_to_tensor(masks, tf.float32)
        if not self._fns:
            return images if masks is None else (images, masks)
        seed = self._next_seed() if seed is None else tf.cast(seed, tf.int64)
        for index, (_, fn, geometric, sometimes) in enumerate(self._fns):
            seeds = Seeds(tf.random.experimental.stateless_fold_in(seed, index))
            joint = masks is not None and geometric
            x = tf.concat([images, masks], axis=-1) if joint else images
            out = fn(x, seeds)
            if sometimes < 1.0:
                out = select(coin(seeds, tf.shape(x)[0], sometimes), out, x)
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
        if op.is_noop(params):
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
