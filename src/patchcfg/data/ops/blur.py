"""Gaussian blur with a sigma drawn per image: patchwork's ``gaussian_blur`` (with a probability) and
imgaug's ``GaussianBlur``. One separable depthwise convolution filters the whole batch."""

import math

from patchcfg.data.ops import PROB, Param, nullable, number, register, value_range


def _blur(images, sigma, radius):
    import tensorflow as tf

    from patchcfg.data.kernels import depthwise_per_image

    grid = tf.cast(tf.range(-radius, radius + 1), tf.float32)[None, :]
    sigma = tf.maximum(sigma, 1e-3)[:, None]
    kernel = tf.exp(-(grid ** 2) / (2.0 * sigma ** 2))
    kernels = kernel / tf.reduce_sum(kernel, 1, keepdims=True)
    return depthwise_per_image(images, kernels, kernels)


def _max_radius(images, wanted):
    return int(max(1, min(wanted, (min(images.shape[1], images.shape[2]) - 1) // 2)))


@register("gaussian_blur", "patchwork",
          "With this probability, Gaussian blur with sigma uniform in `sigma` "
          "(kernel radius: `radius`, by default 1/20 of the height).",
          {"p": Param(PROB, 0.2, "Probability."),
           "sigma": Param(value_range(0, 20), [0.1, 2.0], "Range of the blur's sigma, in pixels."),
           "radius": Param(nullable(number(1, 64, integer=True)), None,
                           "Kernel radius in pixels (at most half the side); null: 1/20 of the height, "
                           "SimCLR's kernel of a tenth of the side. On small images that kernel is a "
                           "few pixels, flatter than the Gaussian of a large sigma (about 3 sigma "
                           "is the whole of it), as torchvision's and PIL's blurs apply it.")},
          primary="p", off_at_zero="p")
def gaussian_blur(params):
    import tensorflow as tf

    from patchcfg.data.kernels import chance, coin, sample, select

    p = chance(params["p"])

    def run(images, seeds):
        batch = tf.shape(images)[0]
        radius = _max_radius(images, params["radius"] or images.shape[1] // 20)
        sigma = sample(seeds, batch, params["sigma"])
        return select(coin(seeds, batch, p), _blur(images, sigma, radius), images)
    return run


@register("GaussianBlur", "imgaug", "Gaussian blur, sigma in pixels (number or [a, b]).",
          {"sigma": Param(value_range(0, 20), [0.0, 3.0], "Sigma in pixels.")}, primary="sigma")
def gaussian_blur_imgaug(params):
    import tensorflow as tf

    from patchcfg.data.kernels import pair, sample

    _, hi = pair(params["sigma"])

    def run(images, seeds):
        radius = _max_radius(images, math.ceil(3 * hi))
        return _blur(images, sample(seeds, tf.shape(images)[0], params["sigma"]), radius)
    return run
