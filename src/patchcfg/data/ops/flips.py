"""Mirror images left-right or up-down: patchwork's ``flip_*`` and imgaug's ``Fliplr`` / ``Flipud``."""

from patchcfg.data.ops import BOOL_OR_PROB, PROB, Param, register


def _flip(axis, p):
    import tensorflow as tf

    from patchcfg.data.kernels import chance, coin, select

    p = chance(p)

    def run(images, seeds):
        return select(coin(seeds, tf.shape(images)[0], p), tf.reverse(images, [axis]), images)
    return run


_BOOL_P = {"p": Param(BOOL_OR_PROB, 0.5, "Probability (true = 0.5).")}
_P = {"p": Param(PROB, 0.5, "Probability.")}


@register("flip_left_right", "patchwork",
          "Mirror left-right; true = half of the images, a number = that fraction.",
          _BOOL_P, primary="p", geometric=True, off_at_zero="p")
def flip_left_right(params):
    return _flip(2, params["p"])


@register("flip_up_down", "patchwork", "Mirror up-down; true = half of the images, a number = that fraction.",
          _BOOL_P, primary="p", geometric=True, off_at_zero="p")
def flip_up_down(params):
    return _flip(1, params["p"])


@register("Fliplr", "imgaug", "Mirror left-right with probability p.", _P, primary="p", geometric=True,
          off_at_zero="p")
def fliplr(params):
    return _flip(2, params["p"])


@register("Flipud", "imgaug", "Mirror up-down with probability p.", _P, primary="p", geometric=True,
          off_at_zero="p")
def flipud(params):
    return _flip(1, params["p"])
