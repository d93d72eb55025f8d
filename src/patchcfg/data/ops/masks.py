"""patchwork's masking: a grey rectangle (``mask``) or a random share of zeroed pixels (``pixel_mask``)."""

from patchcfg.data.ops import PROB, Param, register


@register("mask", "patchwork",
          "With this probability, fill a random rectangle (1/20 to 1/2 of each side) with 0.5.",
          {"p": Param(PROB, 0.2, "Probability.")}, primary="p", off_at_zero="p")
def mask(params):
    import tensorflow as tf

    from patchcfg.data.kernels import chance, rect_mask, uniform, with_prob

    def run(images, seeds):
        batch = tf.shape(images)[0]
        height, width = images.shape[1], images.shape[2]
        dh = tf.floor(uniform(seeds, [batch], max(1, height // 20), max(2, height // 2)))
        dw = tf.floor(uniform(seeds, [batch], max(1, height // 20), max(2, width // 2)))
        y0 = tf.floor(uniform(seeds, [batch], 0.0, 1.0) * (height - dh))
        x0 = tf.floor(uniform(seeds, [batch], 0.0, 1.0) * (width - dw))
        inside = rect_mask(batch, height, width, y0, x0, y0 + dh, x0 + dw)
        return images * (1 - inside) + 0.5 * inside
    return with_prob(chance(params["p"]), run)


@register("pixel_mask", "patchwork", "With this probability, zero a random fraction `drop` of the pixels.",
          {"p": Param(PROB, 0.1, "Probability."), "drop": Param(PROB, 0.7, "Fraction of pixels zeroed.")},
          primary="p", off_at_zero="p")
def pixel_mask(params):
    import tensorflow as tf

    from patchcfg.data.kernels import chance, with_prob

    drop = float(params["drop"])

    def run(images, seeds):
        shape = tf.concat([tf.shape(images)[:3], [1]], 0)
        keep = tf.cast(tf.random.stateless_uniform(shape, seed=seeds.next()) >= drop, tf.float32)
        return images * keep
    return with_prob(chance(params["p"]), run)
