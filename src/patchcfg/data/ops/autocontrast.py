"""Stretch an image's values to fill [0, 1] (patchwork's ``autocontrast``)."""

from patchcfg.data.ops import PROB, Param, register


@register("autocontrast", "patchwork", "With this probability, stretch the image's values to fill [0, 1].",
          {"p": Param(PROB, 0.1, "Probability.")}, primary="p", off_at_zero="p")
def autocontrast(params):
    import tensorflow as tf

    from patchcfg.data.kernels import chance, with_prob

    def run(images, seeds):
        shifted = images - tf.reduce_mean(images, [1, 2, 3], keepdims=True)
        top = tf.reduce_max(shifted, [1, 2, 3], keepdims=True)
        return tf.clip_by_value(shifted / (top + 0.01), 0.0, 1.0)
    return with_prob(chance(params["p"]), run)
