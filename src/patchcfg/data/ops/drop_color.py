"""Replace every channel by the channels' mean (patchwork's ``drop_color``)."""

from patchcfg.data.ops import PROB, Param, register


@register("drop_color", "patchwork",
          "With this probability, replace every channel by the mean of the channels.",
          {"p": Param(PROB, 0.2, "Probability.")}, primary="p", off_at_zero="p")
def drop_color(params):
    import tensorflow as tf

    from patchcfg.data.kernels import chance, with_prob

    def run(images, seeds):
        # the channel mean broadcasts over the channels in the blend of with_prob
        return tf.reduce_mean(images, -1, keepdims=True)
    return with_prob(chance(params["p"]), run)
