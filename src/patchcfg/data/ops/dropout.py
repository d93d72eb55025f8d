"""imgaug's ``Dropout`` (pixels) and ``CoarseDropout`` (rectangular cells) set to zero."""

from patchcfg.data.ops import BOOL_OR_PROB, Param, register, value_range

PER_CHANNEL = Param(BOOL_OR_PROB, False, "Sample per channel (true) or per image (false); a number: "
                    "fraction of images sampled per channel.")


@register("Dropout", "imgaug", "Set a fraction p of the pixels to zero.",
          {"p": Param(value_range(0, 1), 0.05, "Fraction dropped."), "per_channel": PER_CHANNEL}, primary="p")
def dropout(params):
    import tensorflow as tf

    from patchcfg.data.kernels import coin, sample, select

    def run(images, seeds):
        batch = tf.shape(images)[0]
        p = tf.reshape(sample(seeds, batch, params["p"]), [-1, 1, 1, 1])
        one = tf.random.stateless_uniform(tf.concat([tf.shape(images)[:3], [1]], 0), seed=seeds.next())
        per = tf.random.stateless_uniform(tf.shape(images), seed=seeds.next())
        pc = params["per_channel"]
        noise = one if pc is False or pc == 0 else select(
            coin(seeds, batch, 1.0 if pc is True else pc), per, tf.broadcast_to(one, tf.shape(per)))
        return tf.where(noise < p, 0.0, images)
    return run


@register("CoarseDropout", "imgaug",
          "Set a fraction p of rectangular cells to zero; cells are `size_percent` of the image size.",
          {"p": Param(value_range(0, 1), 0.1, "Fraction of cells dropped."),
           "size_percent": Param(value_range(0.001, 1), 0.1,
                                 "Cell grid size as a fraction of the image size."),
           "per_channel": PER_CHANNEL}, primary="p")
def coarse_dropout(params):
    import tensorflow as tf

    from patchcfg.data.kernels import coin, sample, select

    def cell_of(size, cells):
        positions = tf.cast(tf.range(size), tf.float32)[None, :]
        return tf.cast(tf.floor(positions * cells[:, None] / size), tf.int32)

    def run(images, seeds):
        batch = tf.shape(images)[0]
        height, width, channels = images.shape[1], images.shape[2], images.shape[3]
        p = tf.reshape(sample(seeds, batch, params["p"]), [-1, 1, 1, 1])
        size = sample(seeds, batch, params["size_percent"])
        cy = cell_of(height, tf.maximum(1.0, tf.round(size * height)))
        cx = cell_of(width, tf.maximum(1.0, tf.round(size * width)))
        pc = params["per_channel"]
        depth = 1 if pc is False or pc == 0 else channels
        grid = tf.random.stateless_uniform(tf.stack([batch, height, width, depth]), seed=seeds.next())
        rows = tf.gather(grid, cy, axis=1, batch_dims=1)
        cells = tf.gather(rows, cx, axis=2, batch_dims=1)
        if depth > 1 and pc is not True:
            shared = tf.broadcast_to(cells[..., :1], tf.shape(cells))
            cells = select(coin(seeds, batch, float(pc)), cells, shared)
        return tf.where(cells < p, 0.0, images)
    return run
