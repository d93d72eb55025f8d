"""Random crops resized back to the image size: SimCLR's resized crop (``zoom_scale``) and a centred
crop (``center_zoom_scale``). A value of 0 still crops (it is the smallest crop), so neither is ever off."""

import math

from patchcfg.data.ops import Param, number, register


@register("zoom_scale", "patchwork",
          "Random resized crop (SimCLR): a crop covering between this fraction and all of the image area, "
          "aspect ratio in `ratio`, resized back to `data.imshape`.",
          {"scale": Param(number(0, 1, exclusive_lo=True), 0.2,
                          "Smallest crop area, as a fraction of the image."),
           "ratio": Param({"type": "array", "items": number(0, exclusive_lo=True), "minItems": 2,
                           "maxItems": 2}, [0.75, 4 / 3],
                          "Range of crop aspect ratios (width/height, relative to the image).")},
          primary="scale", geometric=True)
def zoom_scale(params):
    """Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations",
    appendix A."""
    import tensorflow as tf

    from patchcfg.data.kernels import crop_resize, uniform

    lo_ratio, hi_ratio = (math.log(r) for r in params["ratio"])
    scale = float(params["scale"])

    def run(images, seeds):
        batch = tf.shape(images)[0]
        area = uniform(seeds, [batch], scale, 1.0)
        ratio = tf.exp(uniform(seeds, [batch], lo_ratio, hi_ratio))
        w = tf.minimum(tf.sqrt(area * ratio), 1.0)
        h = tf.minimum(tf.sqrt(area / ratio), 1.0)
        y0 = uniform(seeds, [batch], 0.0, 1.0) * (1.0 - h)
        x0 = uniform(seeds, [batch], 0.0, 1.0) * (1.0 - w)
        return crop_resize(images, tf.stack([y0, x0, y0 + h, x0 + w], 1))
    return run


@register("center_zoom_scale", "patchwork",
          "Random centred crop keeping between this fraction and all of each side, resized back.",
          {"scale": Param(number(0, 1, exclusive_lo=True), 0.8, "Smallest kept fraction of each side.")},
          primary="scale", geometric=True)
def center_zoom_scale(params):
    import tensorflow as tf

    from patchcfg.data.kernels import crop_resize, uniform

    scale = float(params["scale"])

    def run(images, seeds):
        z = uniform(seeds, [tf.shape(images)[0]], 0.0, (1.0 - scale) / 2.0)
        return crop_resize(images, tf.stack([z, z, 1 - z, 1 - z], 1))
    return run
