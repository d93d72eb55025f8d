"""imgaug's ``Sharpen``: a 3x3 sharpening kernel blended with the image."""

from patchcfg.data.ops import Param, register, value_range


@register("Sharpen", "imgaug", "Sharpen with a 3x3 kernel, blended by alpha; lightness scales the centre.",
          {"alpha": Param(value_range(0, 1), [0.0, 1.0], "Blend factor."),
           "lightness": Param(value_range(0, 10), [0.75, 1.5], "Lightness.")}, primary="alpha")
def sharpen(params):
    import tensorflow as tf

    from patchcfg.data.kernels import depthwise_per_image, sample

    def run(images, seeds):
        batch = tf.shape(images)[0]
        alpha = tf.reshape(sample(seeds, batch, params["alpha"]), [-1, 1, 1, 1])
        light = tf.reshape(sample(seeds, batch, params["lightness"]), [-1, 1, 1, 1])
        box = tf.ones([batch, 3])
        neighbours = depthwise_per_image(images, box, box) - images
        effect = (8.0 + light) * images - neighbours
        return (1 - alpha) * images + alpha * effect
    return run
