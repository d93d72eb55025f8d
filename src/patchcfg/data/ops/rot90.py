"""Rotate by a multiple of 90 degrees (patchwork's ``rot90``)."""

from patchcfg.data.ops import BOOL_OR_PROB, Param, register


@register("rot90", "patchwork",
          "Rotate by a multiple of 90 degrees; true = uniformly 0/90/180/270, a number = probability of a "
          "non-zero rotation. Non-square images are rotated by 0 or 180 only (their shape must not change).",
          {"p": Param(BOOL_OR_PROB, 0.75, "Probability of rotating (true = 0.75: uniform over the four).")},
          primary="p", geometric=True, off_at_zero="p")
def rot90(params):
    import tensorflow as tf

    from patchcfg.data.kernels import chance, coin, select

    p = chance(params["p"], true=0.75)

    def run(images, seeds):
        batch = tf.shape(images)[0]
        square = images.shape[1] == images.shape[2]
        rotate = coin(seeds, batch, p)
        turns = tf.random.stateless_uniform([batch], seed=seeds.next(), minval=1, maxval=4, dtype=tf.int32)
        out = images
        if square:
            transposed = tf.transpose(images, [0, 2, 1, 3])
            r90 = tf.reverse(transposed, [2])          # 90 degrees counter-clockwise
            r180 = tf.reverse(images, [1, 2])
            r270 = tf.reverse(transposed, [1])
            out = select(tf.equal(turns, 1), r90, out)
            out = select(tf.equal(turns, 2), r180, out)
            out = select(tf.equal(turns, 3), r270, out)
        else:
            out = tf.reverse(images, [1, 2])
        return select(rotate, out, images)
    return run
