"""Barlow Twins: the cross-correlation of the two views' embeddings pushed to the identity.

Zbontar, Jing, Misra, LeCun & Deny, "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction", ICML 2021: :mod:`patchcfg.pretrain.losses.barlow_twins`. The cross-correlation is a
statistic of the batch: under ``tf.distribute`` the embeddings of every replica are gathered and
each replica computes the global batch's loss (its share: divided by the replicas), as one device
would. ``off_diagonal_weight`` is lambda, or ``1/d`` for the embedding's width d.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from patchcfg.pretrain import register
from patchcfg.pretrain.losses.barlow_twins import barlow_twins_loss
from patchcfg.pretrain.params import PretrainParams
from patchcfg.pretrain.two_view import TwoViewMethod
from patchcfg.pretrain.vicreg import batch_statistic


@register("barlow_twins")
class BarlowTwins(TwoViewMethod):
    """Barlow Twins over the global batch's embeddings."""

    summary = "the cross-correlation of the views' embeddings pushed to the identity (Zbontar et al. 2021)."
    config_keys = {
        "off_diagonal_weight": {
            "description": ("lambda: weight of the off-diagonal (redundancy reduction) term of the "
                            "cross-correlation, or \"1/d\" for one over the embedding's width "
                            "(projection.dim). The paper's 5e-3 goes with an 8192-wide projector "
                            "(projection: {depth: 3, units: 8192, dim: 8192, batchnorm: true})."),
            "anyOf": [{"type": "number", "minimum": 0}, {"const": "1/d"}],
            "default": 0.005,
        },
    }

    @dataclass(frozen=True)
    class Params(PretrainParams):
        off_diagonal_weight: float | str

    def off_diagonal_lambda(self) -> float:
        """lambda: ``off_diagonal_weight``, or 1/d when it says ``1/d``."""
        weight = self.params.off_diagonal_weight
        return 1.0 / int(self.head.output_shape[-1]) if weight == "1/d" else float(weight)

    def pair_loss(self, z1, z2, *, z1_all, z2_all, offset):
        loss, terms = barlow_twins_loss(z1_all, z2_all, self.off_diagonal_lambda())
        rows = tf.shape(z1)[0]
        return batch_statistic(loss, rows), {k: batch_statistic(v, rows) for k, v in terms.items()}


__all__ = ["BarlowTwins"]
