"""BYOL: an online network predicts a slowly moving target network's projection of the other view.

Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning", NeurIPS 2020.
The online network is encoder, projection head and predictor (``pretrain.predictor``); the target
network is encoder and head only, an exponential moving average of the online ones whose momentum
rises from ``tau_base`` to 1 on a cosine schedule over the run
(:class:`~patchcfg.pretrain.momentum.Bootstrap`). Both views go through both networks; the loss is
the symmetric ``2 - 2 cos(prediction, target)`` (:mod:`patchcfg.pretrain.losses.byol`), without
negatives, so nothing needs gathering across replicas: the per-example loss of each replica is
already its share (with ``backbone.sync_batchnorm`` the batch norm sees the global batch, as the
paper's).
"""

from __future__ import annotations

import tensorflow as tf

from patchcfg.pretrain import register
from patchcfg.pretrain.losses.byol import byol_loss
from patchcfg.pretrain.momentum import Bootstrap
from patchcfg.pretrain.params import BootstrapParams, predictor_key
from patchcfg.pretrain.two_view import TwoViewMethod


@register("byol")
class BYOL(Bootstrap, TwoViewMethod):
    """BYOL: online encoder, head and predictor trained; target encoder and head a cosine-scheduled EMA."""

    summary = ("an online network with a predictor regresses a moving-average target network's projection "
               "of the other view, no negatives (Grill et al. 2020).")
    config_keys = {
        "predictor": predictor_key("The predictor on the online projection: Dense(units) [+ BN] + ReLU, "
                                   "then Dense(projection.dim). The paper's is 4096 wide with batch norm, "
                                   "its projection 4096 -> 256 with batch norm (projection: {units: 4096, "
                                   "dim: 256, batchnorm: true}).", 4096),
    }

    Params = BootstrapParams

    def build_state(self):
        self.build_bootstrap({"target_encoder": self.encoder, "target_head": self.head})

    def contrastive_loss(self, view1, view2):
        n = tf.shape(view1)[0]
        z1, z2 = self.embed_pair(view1, view2)
        p = self.predict(tf.concat([z1, z2], axis=0))
        t = self.momentum_encoder(tf.concat([view1, view2], axis=0), training=True)
        return byol_loss(p[:n], p[n:], t[:n], t[n:]), {}, {}


__all__ = ["BYOL"]
