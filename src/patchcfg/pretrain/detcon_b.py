"""DetCon_B: DetCon's regions with BYOL's networks, a predictor and a moving-average target.

Hénaff, Koppula, Alayrac, van den Oord, Vinyals & Carreira, "Efficient Visual Pretraining with
Contrastive Detection", ICCV 2021. The regions, masks and pooling are DetCon's
(:mod:`patchcfg.pretrain.detcon`); the networks are BYOL's (Grill et al. 2020): each region pooled
from the online feature map goes through the projection head and the predictor, each region pooled
from the target feature map through the target head, the targets an exponential moving average of
the online backbone and head with the momentum rising from ``tau_base`` to 1 on a cosine schedule
(:class:`~patchcfg.pretrain.momentum.Bootstrap`). The loss (:mod:`patchcfg.pretrain.losses.detcon_b`)
is the paper's: a region's prediction must pick the same region's target in the other view among
every region of the global batch (``objective: nce``, at ``temperature``); ``objective: byol`` is
BYOL's regression per region instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from patchcfg.pretrain import register
from patchcfg.pretrain.detcon import MIN_AREA, DetCon, pool_regions
from patchcfg.pretrain.losses.detcon_b import detcon_b_loss
from patchcfg.pretrain.momentum import Bootstrap
from patchcfg.pretrain.params import BootstrapParams, predictor_key
from patchcfg.train.distribute import gather_rows


@register("detcon_b")
class DetConB(Bootstrap, DetCon):
    """DetCon_B: region pooling, an online predictor, a cosine-scheduled target network."""

    summary = "DetCon's regions with BYOL's predictor and target network (Henaff et al. 2021)."
    config_keys = {
        "predictor": predictor_key("The predictor on each region's online projection: Dense(units) [+ BN] "
                                   "+ ReLU, then Dense(projection.dim) (the paper's is BYOL's, 4096 wide "
                                   "with batch norm).", 4096),
        "objective": {
            "description": ("nce = the paper's: a region's prediction must pick the same region's target "
                            "projection in the other view among every region of the global batch, at "
                            "temperature; byol = BYOL's regression 2 - 2 cos(prediction, target) per "
                            "region."),
            "enum": ["nce", "byol"],
            "default": "nce",
        },
    }

    @dataclass(frozen=True)
    class Params(DetCon.Params, BootstrapParams):
        objective: str

    def build_state(self):
        self.build_bootstrap({"target_feature_maps": self.feature_maps, "target_head": self.head})
        self.target_feature_maps, self.target_head = self.momentum_encoder.targets.values()

    def contrastive_loss(self, view1, view2):
        """Per image: the mean region loss, the regions' accuracy and how many regions counted."""
        (view1, masks1), (view2, masks2) = view1, view2
        n = tf.shape(view1)[0]
        images, masks = tf.concat([view1, view2], axis=0), tf.concat([masks1, masks2], axis=0)
        pooled, area = pool_regions(self.feature_maps(images, training=True), masks)
        width = tf.shape(pooled)[-1]
        z = tf.cast(self.head(tf.reshape(pooled, [-1, width]), training=True), tf.float32)
        p = tf.reshape(self.predict(z), [2, -1, tf.shape(z)[-1]])  # [view, image * mask, d]
        target_pooled, _ = pool_regions(self.target_feature_maps(images, training=True), masks)
        t = self.target_head(tf.reshape(target_pooled, [-1, tf.shape(target_pooled)[-1]]), training=True)
        t = tf.reshape(tf.cast(t, tf.float32), [2, -1, tf.shape(p)[-1]])
        present = tf.reshape(area >= MIN_AREA, [2, -1])
        valid = tf.logical_and(present[0], present[1])
        (t1_all, t2_all, valid_all), offset = gather_rows(t[0], t[1], tf.cast(valid, tf.float32)[:, None])
        loss, accuracy = detcon_b_loss(p[0], p[1], t[0], t[1], valid, self.temperature, self.params.objective,
                                       t1_all=t1_all, t2_all=t2_all, valid_all=valid_all[:, 0] > 0.5, offset=offset)
        per_image_count = tf.reduce_sum(tf.reshape(tf.cast(valid, tf.float32), [n, -1]), axis=1)
        per_image = tf.reduce_sum(tf.reshape(loss, [n, -1]), axis=1) / tf.maximum(per_image_count, 1.0)
        per_image_acc = tf.reduce_sum(tf.reshape(accuracy, [n, -1]), axis=1) / tf.maximum(per_image_count, 1.0)
        return per_image, {"region_acc": per_image_acc, "regions_per_image": per_image_count}, {}


__all__ = ["DetConB"]
