"""Random shear along both axes (patchwork's ``shear``)."""

from patchcfg.data.ops import Param, number, register


@register("shear", "patchwork", "Random shear along both axes up to this factor (reflected borders).",
          {"factor": Param(number(0, 2), 0.3, "Largest shear factor.")}, primary="factor", geometric=True,
          off_at_zero="factor")
def shear(params):
    import tensorflow as tf

    from patchcfg.data.kernels import project, uniform

    factor = float(params["factor"])

    def run(images, seeds):
        batch = tf.shape(images)[0]
        height, width = images.shape[1], images.shape[2]
        shx = uniform(seeds, [batch], -factor, factor)
        shy = uniform(seeds, [batch], -factor, factor)
        one, zero = tf.ones([batch]), tf.zeros([batch])
        # output -> input map as in patchwork (shear about the centre)
        inverse = tf.reshape(tf.stack([one, shx, -width * shx / 2, shy, one, -height * shy / 2,
                                       zero, zero, one], -1), [-1, 3, 3])
        return project(images, tf.linalg.inv(inverse), fill_mode="reflect")
    return run
