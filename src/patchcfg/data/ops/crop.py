"""imgaug's ``Crop`` with ``keep_size``: crop each side by a fraction, resize back."""

from patchcfg.data.ops import Param, register, value_range


@register("Crop", "imgaug", "Crop each side by a fraction of the size, then resize back (keep_size).",
          {"percent": Param(value_range(0, 0.49), [0.0, 0.1], "Fraction cropped per side."),
           "sample_independently": Param({"type": "boolean"}, True,
                                         "One fraction per side (true) or one for all.")},
          primary="percent", geometric=True)
def crop(params):
    import tensorflow as tf

    from patchcfg.data.kernels import crop_resize, sample

    def run(images, seeds):
        batch = tf.shape(images)[0]
        if params["sample_independently"]:
            top, left, bottom, right = (sample(seeds, batch, params["percent"]) for _ in range(4))
        else:
            top = left = bottom = right = sample(seeds, batch, params["percent"])
        return crop_resize(images, tf.stack([top, left, 1 - bottom, 1 - right], 1))
    return run
