"""Solarize: invert the pixels above a threshold (patchwork's random threshold, imgaug's fixed one)."""

from patchcfg.data.ops import PROB, Param, register, value_range


@register("solarize", "patchwork", "With this probability, invert the pixels above a random threshold.",
          {"p": Param(PROB, 0.1, "Probability.")}, primary="p", off_at_zero="p")
def solarize(params):
    import tensorflow as tf

    from patchcfg.data.kernels import chance, uniform, with_prob

    def run(images, seeds):
        threshold = tf.reshape(uniform(seeds, [tf.shape(images)[0]], 0.0, 1.0), [-1, 1, 1, 1])
        return tf.where(images < threshold, images, 1.0 - images)
    return with_prob(chance(params["p"]), run)


@register("Solarize", "imgaug", "Invert the values above a threshold, with probability p.",
          {"p": Param(PROB, 1.0, "Probability."),
           "threshold": Param(value_range(0, 255), 128, "Threshold (0-255 scale).")},
          primary="p", off_at_zero="p")
def solarize_imgaug(params):
    import tensorflow as tf

    from patchcfg.data.kernels import coin, sample, select

    def run(images, seeds):
        batch = tf.shape(images)[0]
        threshold = tf.reshape(sample(seeds, batch, params["threshold"]) / 255.0, [-1, 1, 1, 1])
        solarized = tf.where(images >= threshold, 1.0 - images, images)
        return select(coin(seeds, batch, params["p"]), solarized, images)
    return run
