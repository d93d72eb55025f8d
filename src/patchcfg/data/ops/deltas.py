"""patchwork's colour deltas: brightness, contrast, saturation and hue, each by a random factor or shift."""

from patchcfg.data.ops import Param, number, register


def _delta(name, doc, default, hi=1, rgb_only=False):
    @register(f"{name}_delta", "patchwork", doc, {"delta": Param(number(0, hi), default, "d.")},
              primary="delta", rgb_only=rgb_only, off_at_zero="delta")
    def build(params):
        import tensorflow as tf

        from patchcfg.data.kernels import adjust_hsv, uniform

        delta = float(params["delta"])

        def run(images, seeds):
            batch = tf.shape(images)[0]
            if name == "brightness":
                factor = uniform(seeds, [batch], max(1.0 - delta, 0.0), 1.0 + delta)
                return images * tf.reshape(factor, [-1, 1, 1, 1])
            if name == "contrast":
                factor = tf.reshape(uniform(seeds, [batch], 1.0 - delta, 1.0 + delta), [-1, 1, 1, 1])
                mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
                return (images - mean) * factor + mean
            if name == "saturation":
                return adjust_hsv(images, saturation=uniform(seeds, [batch], 1.0 - delta, 1.0 + delta))
            return adjust_hsv(images, hue=uniform(seeds, [batch], -delta, delta))
        return run
    return build


brightness_delta = _delta("brightness", "Multiply by a random factor in [1-d, 1+d].", 0.2)
contrast_delta = _delta("contrast", "Scale contrast around each channel's mean by a factor in [1-d, 1+d].",
                        0.1)
saturation_delta = _delta("saturation", "Scale saturation by a factor in [1-d, 1+d] (RGB images).", 0.1,
                          rgb_only=True)
hue_delta = _delta("hue", "Shift hue by up to +-d of the colour circle (RGB images).", 0.05, hi=0.5,
                   rgb_only=True)
