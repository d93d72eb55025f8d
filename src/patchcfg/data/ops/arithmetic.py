"""imgaug's pixel arithmetic, per image or per channel: ``Multiply``, ``Add``, ``AdditiveGaussianNoise``,
``LinearContrast`` (and its old name ``ContrastNormalization``), ``Invert``."""

from patchcfg.data.ops import PROB, Param, register, value_range
from patchcfg.data.ops.dropout import PER_CHANNEL


def _factors(params, key):
    """run(images, seeds) -> (B, 1, 1, C) factors drawn from ``params[key]`` (per channel as asked)."""
    import tensorflow as tf

    from patchcfg.data.kernels import per_channel_sample

    def draw(images, seeds):
        batch, channels = tf.shape(images)[0], images.shape[-1]
        return per_channel_sample(seeds, batch, channels, params[key], params["per_channel"])
    return draw


@register("Multiply", "imgaug", "Multiply pixel values by a factor.",
          {"mul": Param(value_range(0, 10), [0.8, 1.2], "Factor."), "per_channel": PER_CHANNEL},
          primary="mul")
def multiply(params):
    draw = _factors(params, "mul")
    return lambda images, seeds: images * draw(images, seeds)


@register("Add", "imgaug", "Add a value, on the 0-255 scale (divided by 255).",
          {"value": Param(value_range(-255, 255), [-20, 20], "Value (0-255 scale)."),
           "per_channel": PER_CHANNEL},
          primary="value")
def add(params):
    draw = _factors(params, "value")
    return lambda images, seeds: images + draw(images, seeds) / 255.0


@register("AdditiveGaussianNoise", "imgaug", "Add Gaussian noise; `scale` is its std on the 0-255 scale.",
          {"scale": Param(value_range(0, 255), [0, 12.75], "Noise std (0-255 scale)."),
           "per_channel": PER_CHANNEL},
          primary="scale")
def additive_gaussian_noise(params):
    import tensorflow as tf

    draw = _factors(params, "scale")

    def run(images, seeds):
        std = draw(images, seeds) / 255.0
        return images + std * tf.random.stateless_normal(tf.shape(images), seed=seeds.next())
    return run


_CONTRAST = {"alpha": Param(value_range(0, 10), [0.75, 1.25], "Contrast factor."), "per_channel": PER_CHANNEL}


@register("LinearContrast", "imgaug", "Scale contrast around 0.5: 0.5 + alpha * (x - 0.5).", _CONTRAST,
          primary="alpha")
@register("ContrastNormalization", "imgaug", "Old imgaug name of LinearContrast.", _CONTRAST, primary="alpha")
def linear_contrast(params):
    draw = _factors(params, "alpha")
    return lambda images, seeds: 0.5 + draw(images, seeds) * (images - 0.5)


@register("Invert", "imgaug", "Invert (1 - x) with probability p.",
          {"p": Param(PROB, 1.0, "Probability."), "per_channel": PER_CHANNEL}, primary="p", off_at_zero="p")
def invert(params):
    import tensorflow as tf

    draw = _factors(dict(params, coin=[0.0, 1.0]), "coin")

    def run(images, seeds):
        return tf.where(draw(images, seeds) < params["p"], 1.0 - images, images)
    return run
