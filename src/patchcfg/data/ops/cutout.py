"""imgaug's ``Cutout``: fill random squares with a value (DeVries & Taylor 2017, "Improved
Regularization of Convolutional Neural Networks with Cutout")."""

from patchcfg.data.ops import Param, number, register, value_range


@register("Cutout", "imgaug",
          "Fill `nb_iterations` random squares (side `size` of the image size) with `cval`.",
          {"nb_iterations": Param(number(1, 16, integer=True), 1, "Number of squares."),
           "size": Param(value_range(0, 1), 0.2, "Side as a fraction of the smaller image side."),
           "cval": Param(value_range(0, 255), 128, "Fill value (0-255 scale).")}, primary="nb_iterations")
def cutout(params):
    import tensorflow as tf

    from patchcfg.data.kernels import rect_mask, sample, uniform

    def run(images, seeds):
        batch = tf.shape(images)[0]
        height, width = images.shape[1], images.shape[2]
        out = images
        for _ in range(int(params["nb_iterations"])):
            side = sample(seeds, batch, params["size"]) * min(height, width)
            cy = uniform(seeds, [batch], 0.0, float(height))
            cx = uniform(seeds, [batch], 0.0, float(width))
            half = side / 2
            square = rect_mask(batch, height, width, cy - half, cx - half, cy + half, cx + half)
            fill = tf.reshape(sample(seeds, batch, params["cval"]) / 255.0, [-1, 1, 1, 1])
            out = out * (1 - square) + fill * square
        return out
    return run
