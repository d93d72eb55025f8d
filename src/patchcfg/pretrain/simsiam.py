"""SimSiam: a predictor against the other view's projection, with a stop-gradient, nothing else.

Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021. One encoder and
projection head for both views, a predictor (``pretrain.predictor``, the paper's bottleneck MLP),
and the symmetric negative cosine ``D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2``
(:mod:`patchcfg.pretrain.losses.simsiam`): no negatives, no momentum encoder. The loss is per
example, so each replica's share needs nothing gathered.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from patchcfg.pretrain import register
from patchcfg.pretrain.losses.simsiam import simsiam_loss
from patchcfg.pretrain.params import Predictor, PretrainParams, predictor_key
from patchcfg.pretrain.two_view import TwoViewMethod


@register("simsiam")
class SimSiam(TwoViewMethod):
    """SimSiam: encoder, head and predictor; the projections are the stop-gradient targets."""

    summary = "a predictor against the other view's projection behind a stop-gradient (Chen & He 2021)."
    config_keys = {
        "predictor": predictor_key("The predictor: Dense(units) [+ BN] + ReLU, then Dense(projection.dim). "
                                   "The paper's is a bottleneck, 512 wide on a 2048-wide projection with "
                                   "batch norm (projection: {depth: 3, units: 2048, dim: 2048, batchnorm: "
                                   "true}).", 512),
    }

    @dataclass(frozen=True)
    class Params(PretrainParams):
        predictor: Predictor

    def build_state(self):
        self.predictor = self.build_predictor(self.params.predictor)

    def contrastive_loss(self, view1, view2):
        n = tf.shape(view1)[0]
        z1, z2 = self.embed_pair(view1, view2)
        p = self.predict(tf.concat([z1, z2], axis=0))
        loss = simsiam_loss(p[:n], p[n:], z1, z2)
        return loss, {"cosine": -loss}, {}


__all__ = ["SimSiam"]
