"""Layers of our own: a batch normalization that runs TensorFlow's fused kernel, the token pooling
of vision transformers, the 1x1 channel adapter in front of a pretrained network.

Keras 3's ``BatchNormalization`` computes the batch moments and the normalisation as separate ops
on the TensorFlow backend; TensorFlow's ``FusedBatchNormV3`` (Ioffe & Szegedy 2015, "Batch
Normalization: Accelerating Deep Network Training by Reducing Internal Covariate Shift") does
both, forward and backward, in one kernel. :class:`BatchNormalization` is Keras' layer with the
same weights, configuration and moving-statistics update (biased batch variance, ``momentum``),
saved and loaded like it; it takes the fused path for float32, bfloat16 and float16 inputs of rank 2 or 4 with
the channels last, and Keras' own path otherwise (``synchronized`` statistics across replicas, masks,
other dtypes and axes, other backends).

``benchmarks/train_step.py`` measures the model-only SimCLR step with either layer side by side.
"""

from __future__ import annotations

import keras
import numpy as np

#: input dtypes the fused kernel takes (its scale, offset and statistics stay float32): float32, and
#: the 16-bit floats of the mixed-precision policies
FUSED_DTYPES = ("float32", "bfloat16", "float16")


@keras.saving.register_keras_serializable(package="patchcfg")
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` on TensorFlow's fused kernel where it applies."""

    def _fused(self, inputs, mask) -> bool:
        return (keras.backend.backend() == "tensorflow" and not self.synchronized and mask is None
                and len(inputs.shape) in (2, 4) and self.axis in (-1, len(inputs.shape) - 1)
                and keras.backend.standardize_dtype(inputs.dtype) in FUSED_DTYPES)

    def call(self, inputs, training=None, mask=None):
        if not self._fused(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        shape = tf.shape(inputs)
        x = tf.reshape(inputs, [-1, 1, 1, shape[-1]]) if len(inputs.shape) == 2 else inputs
        ones = tf.ones_like(self.moving_mean)
        scale = self.gamma if self.scale else ones
        offset = self.beta if self.center else tf.zeros_like(self.moving_mean)
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, scale, offset, epsilon=self.epsilon, is_training=True, exponential_avg_factor=1.0)
            # the kernel returns the unbiased batch variance; Keras keeps the biased one
            count = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
            biased = variance * (count - 1.0) / count
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + tf.stop_gradient(mean) * (1.0 - momentum))
            self.moving_variance.assign(self.moving_variance * momentum
                                        + tf.stop_gradient(biased) * (1.0 - momentum))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, scale, offset, mean=self.moving_mean, variance=self.moving_variance, epsilon=self.epsilon,
                is_training=False)
        return tf.reshape(y, shape) if len(inputs.shape) == 2 else y


@keras.saving.register_keras_serializable(package="patchcfg")
class TokenPool(keras.layers.Layer):
    """One vector per image from a vision transformer's tokens ``(batch, prefix + h*w, D)``.

    The prefix is the class token and any register tokens (Darcet et al. 2024, "Vision Transformers
    Need Registers"), ``tokens - h*w`` of them, with the class token first. Modes: ``cls`` (the
    class token), ``avg``/``mean`` (mean of the patch tokens), ``max`` (their max), ``cls+mean``
    (both, concatenated: 2·D, the pooling of DINOv2's linear probes), ``none`` (the patch tokens as
    a feature map ``(batch, h, w, D)``).
    """

    MODES = ("cls", "avg", "mean", "max", "cls+mean", "none")

    def __init__(self, mode: str = "cls", grid: tuple[int, int] | None = None, **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"TokenPool mode: expected one of {', '.join(self.MODES)}, got {mode!r}")
        self.mode = mode
        self.grid = tuple(int(g) for g in grid) if grid else None

    def _prefix(self, tokens: int) -> int:
        if self.grid is None:
            return 1
        return tokens - self.grid[0] * self.grid[1]

    def call(self, tokens):
        prefix = self._prefix(tokens.shape[1])
        patches = tokens[:, prefix:, :]
        if self.mode == "cls":
            return tokens[:, 0, :]
        if self.mode in ("avg", "mean"):
            return keras.ops.mean(patches, axis=1)
        if self.mode == "max":
            return keras.ops.max(patches, axis=1)
        if self.mode == "cls+mean":
            return keras.ops.concatenate([tokens[:, 0, :], keras.ops.mean(patches, axis=1)], axis=-1)
        return keras.ops.reshape(patches, (-1, self.grid[0], self.grid[1], tokens.shape[-1]))

    def compute_output_shape(self, input_shape):
        width = input_shape[-1]
        if self.mode == "none":
            return (input_shape[0], self.grid[0], self.grid[1], width)
        return (input_shape[0], 2 * width if self.mode == "cls+mean" else width)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "grid": self.grid}


def channel_adapter(x, channels: int):
    """A learned 1x1 conv from ``channels`` to the 3 a pretrained network takes (the channels
    paragraph of :mod:`patchcfg.models.backbones`)."""
    conv = keras.layers.Conv2D(3, 1, name="channel_adapter")
    x = conv(x)
    conv.set_weights([_adapter_init(channels), np.zeros(3, dtype="float32")])
    return x


def _adapter_init(channels: int) -> np.ndarray:
    """1x1 kernel (1, 1, channels, 3): channel mean for < 3 channels, identity on the first 3 else."""
    kernel = np.zeros((1, 1, channels, 3), dtype="float32")
    if channels < 3:
        kernel[...] = 1.0 / channels
    else:
        for c in range(3):
            kernel[0, 0, c, c] = 1.0
    return kernel
