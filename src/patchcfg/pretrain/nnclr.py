"""NNCLR: the nearest neighbour of an embedding in a support set is its positive.

Dwibedi, Aytar, Tompson, Sermanet & Zisserman, "With a Little Help from My Friends: Nearest-Neighbor
Contrastive Learning of Visual Representations", ICCV 2021. The support set is a queue of the last
``queue_size`` projections of view 1 (L2-normalised, the global batch enqueued after each step,
checkpointed); each projection's nearest neighbour in it must pick the other view's prediction among
the global batch's predictions (NT-Xent at ``temperature``, both directions:
:mod:`patchcfg.pretrain.losses.nnclr`). ``predictor: null`` compares with the projections instead.

The paper's support set holds 98,304 embeddings of ImageNet's 1.28 million images; here it must stay
below the number of images (a larger one would hold stale copies of the same images, which would
then be their own nearest neighbours) and at least the global batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from patchcfg.errors import UserError
from patchcfg.pretrain import register
from patchcfg.pretrain.losses.nnclr import nnclr_loss
from patchcfg.pretrain.params import Predictor, PretrainParams, predictor_key
from patchcfg.pretrain.two_view import TwoViewMethod
from patchcfg.train.distribute import gather_rows


@register("nnclr")
class NNCLR(TwoViewMethod):
    """NNCLR: encoder, head and an optional predictor; a support-set queue of projections."""

    summary = "each embedding's nearest neighbour in a support set is its positive (Dwibedi et al. 2021)."
    config_keys = {
        "queue_size": {
            "description": ("Size of the support set, the queue of past projections searched for each "
                            "embedding's nearest neighbour: at least batch_size and below the number of "
                            "images (a larger one would hold stale copies of the same images). The paper's "
                            "is 98,304 for ImageNet's 1.28 million images; the default suits a few "
                            "thousand images (the demo has 1,797): keep it to a fraction of yours."),
            "type": "integer",
            "minimum": 1,
            "default": 1024,
        },
        "predictor": predictor_key("The predictor on the projection whose outputs the neighbours must pick "
                                   "(the paper's: 4096 wide with batch norm); null = the projections "
                                   "themselves.", 4096, nullable=True),
    }

    @dataclass(frozen=True)
    class Params(PretrainParams):
        queue_size: int
        predictor: Predictor | None

    def build_state(self):
        self.queue_size = self.params.queue_size
        if not self.global_batch_size <= self.queue_size < len(self.paths):
            raise UserError(f"pretrain.queue_size ({self.queue_size}) must be at least batch_size "
                            f"({self.global_batch_size}) and below the number of images ({len(self.paths)})")
        if self.params.predictor is not None:
            self.predictor = self.build_predictor(self.params.predictor)
        dim = int(self.head.output_shape[-1])
        initial = tf.math.l2_normalize(tf.random.stateless_normal((self.queue_size, dim), seed=[self.seed, 11]),
                                       axis=1)
        self.queue = tf.Variable(initial, trainable=False, name="nnclr_support_set")

    def extra_state(self):
        return {"support_set": self.queue}

    def contrastive_loss(self, view1, view2):
        n = tf.shape(view1)[0]
        z1, z2 = self.embed_pair(view1, view2)
        if self.predictor is not None:
            p = self.predict(tf.concat([z1, z2], axis=0))
            p1, p2 = p[:n], p[n:]
        else:
            p1, p2 = z1, z2
        (p1_all, p2_all), offset = gather_rows(p1, p2)
        loss, hit = nnclr_loss(z1, z2, p1, p2, tf.convert_to_tensor(self.queue), self.temperature,
                               p1_all=p1_all, p2_all=p2_all, offset=offset)
        keys = tf.stop_gradient(tf.math.l2_normalize(z1, axis=1))
        return loss, {"contrastive_acc": hit}, {"keys": keys}

    def after_step(self, strategy, aux):
        """Enqueue the global batch's view-1 projections (in replica order), dropping the oldest."""
        keys = aux["keys"]
        if strategy.num_replicas_in_sync > 1:
            keys = strategy.gather(keys, axis=0)
        self.queue.assign(tf.concat([keys, self.queue[: self.queue_size - tf.shape(keys)[0]]], axis=0))


__all__ = ["NNCLR"]
