"""VICReg: invariance, variance and covariance terms on the two views' embeddings.

Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", ICLR 2022: :mod:`patchcfg.pretrain.losses.vicreg`. The variance and covariance are
statistics of the batch, so under ``tf.distribute`` the embeddings of every replica are gathered
(differentiably) and each replica computes the loss of the global batch; its share is that loss
divided by the replicas, so the gradients summed over replicas are those of one device.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from patchcfg.pretrain import register
from patchcfg.pretrain.losses.vicreg import vicreg_loss
from patchcfg.pretrain.params import PretrainParams
from patchcfg.pretrain.two_view import TwoViewMethod


def batch_statistic(value, rows):
    """A statistic of the global batch as a per-example value: summed over the global batch and
    divided by it (:func:`~patchcfg.train.distribute.global_mean`), every replica's share adds up to it."""
    return tf.fill(tf.reshape(rows, [1]), tf.cast(value, tf.float32))


@register("vicreg")
class VICReg(TwoViewMethod):
    """VICReg over the global batch's embeddings."""

    summary = "invariance, variance and covariance terms (Bardes et al. 2022)."
    config_keys = {
        "invariance_weight": {
            "description": ("lambda: weight of the invariance term, the mean squared error between the "
                            "views' embeddings."),
            "type": "number",
            "minimum": 0,
            "default": 25.0,
        },
        "variance_weight": {
            "description": ("mu: weight of the variance term, the hinge max(0, gamma - std) on each "
                            "dimension's standard deviation over the global batch, for each view."),
            "type": "number",
            "minimum": 0,
            "default": 25.0,
        },
        "covariance_weight": {
            "description": ("nu: weight of the covariance term, the squared off-diagonal covariances over "
                            "the global batch divided by the embedding's width, for each view."),
            "type": "number",
            "minimum": 0,
            "default": 1.0,
        },
        "gamma": {
            "description": "gamma: the standard deviation each dimension is pushed up to.",
            "type": "number",
            "exclusiveMinimum": 0,
            "default": 1.0,
        },
        "epsilon": {
            "description": "epsilon in sqrt(Var + epsilon): keeps the standard deviation's gradient finite.",
            "type": "number",
            "minimum": 0,
            "default": 0.0001,
        },
    }

    @dataclass(frozen=True)
    class Params(PretrainParams):
        invariance_weight: float
        variance_weight: float
        covariance_weight: float
        gamma: float
        epsilon: float

    def pair_loss(self, z1, z2, *, z1_all, z2_all, offset):
        p = self.params
        loss, terms = vicreg_loss(z1_all, z2_all, p.invariance_weight, p.variance_weight, p.covariance_weight,
                                  p.gamma, p.epsilon)
        rows = tf.shape(z1)[0]
        return batch_statistic(loss, rows), {k: batch_statistic(v, rows) for k, v in terms.items()}


__all__ = ["VICReg", "batch_statistic"]
