"""imgaug's ``Grayscale``: blend with the grey image."""

from patchcfg.data.ops import Param, register, value_range


@register("Grayscale", "imgaug", "Blend with the grayscale image (mean of channels if not RGB) by alpha.",
          {"alpha": Param(value_range(0, 1), 1.0, "Blend factor: 0 = unchanged, 1 = gray.")}, primary="alpha")
def grayscale(params):
    import tensorflow as tf

    from patchcfg.data.kernels import gray, sample

    def run(images, seeds):
        alpha = tf.reshape(sample(seeds, tf.shape(images)[0], params["alpha"]), [-1, 1, 1, 1])
        return (1 - alpha) * images + alpha * gray(images)
    return run
