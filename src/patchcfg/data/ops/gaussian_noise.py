"""Additive Gaussian noise on a share of the images (patchwork's ``gaussian_noise``)."""

from patchcfg.data.ops import PROB, Param, number, register


@register("gaussian_noise", "patchwork",
          "With this probability, add Gaussian noise of standard deviation `std`.",
          {"p": Param(PROB, 0.2, "Probability."),
           "std": Param(number(0, 1), 0.1, "Noise standard deviation.")},
          primary="p", off_at_zero="p")
def gaussian_noise(params):
    import tensorflow as tf

    from patchcfg.data.kernels import chance, with_prob

    std = float(params["std"])

    def run(images, seeds):
        return images + tf.random.stateless_normal(tf.shape(images), seed=seeds.next(), stddev=std)
    return with_prob(chance(params["p"]), run)
