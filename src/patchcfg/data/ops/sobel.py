"""Replace an image by its Sobel edge magnitude (patchwork's ``sobel_prob``)."""

from patchcfg.data.ops import PROB, Param, register


@register("sobel_prob", "patchwork", "With this probability, replace the image by its Sobel edge magnitude.",
          {"p": Param(PROB, 0.1, "Probability.")}, primary="p", off_at_zero="p")
def sobel_prob(params):
    import tensorflow as tf

    from patchcfg.data.kernels import chance, coin, select

    p = chance(params["p"])

    def run(images, seeds):
        batch = tf.shape(images)[0]
        edges = tf.reduce_mean(tf.image.sobel_edges(images), axis=[-1, -2], keepdims=False)
        lo = tf.reduce_min(edges, [1, 2], keepdims=True)
        hi = tf.reduce_max(edges, [1, 2], keepdims=True)
        edges = (edges - lo) / (hi - lo + 1e-7)
        edges = tf.repeat(edges[..., None], images.shape[-1], axis=-1)
        return select(coin(seeds, batch, p), edges, images)
    return run
