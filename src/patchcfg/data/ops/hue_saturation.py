"""imgaug's ``AddToHueAndSaturation`` on its -255..255 scale."""

from patchcfg.data.ops import Param, nullable, register, value_range


@register("AddToHueAndSaturation", "imgaug",
          "Add to hue and saturation, imgaug's -255..255 scale (255 = a full turn of hue / the full "
          "saturation range). RGB images.",
          {"value": Param(value_range(-255, 255), [-20, 20], "Value for both hue and saturation."),
           "value_hue": Param(nullable(value_range(-255, 255)), None, "Hue value (overrides value)."),
           "value_saturation": Param(nullable(value_range(-255, 255)), None,
                                     "Saturation value (overrides value).")},
          primary="value", rgb_only=True)
def add_to_hue_and_saturation(params):
    import tensorflow as tf

    from patchcfg.data.kernels import adjust_hsv, sample

    hue = params["value_hue"] if params["value_hue"] is not None else params["value"]
    saturation = params["value_saturation"] if params["value_saturation"] is not None else params["value"]

    def run(images, seeds):
        batch = tf.shape(images)[0]
        return adjust_hsv(images, hue=sample(seeds, batch, hue) / 255.0,
                          sat_add=sample(seeds, batch, saturation) / 255.0)
    return run
