"""MoCo v2 with optional MoCHi hard-negative mixing and the EqCo margin.

He, Fan, Wu, Xie & Girshick, "Momentum Contrast for Unsupervised Visual Representation Learning",
CVPR 2020; Chen, Fan, Girshick & He, "Improved Baselines with Momentum Contrastive Learning" (MoCo
v2), 2020: a key encoder and head that are a momentum average of the query encoder and head
(:class:`~patchcfg.pretrain.momentum.MomentumEncoder`), a queue of K past keys as negatives, InfoNCE
with temperature; MoCHi (Kalantidis et al. 2020) and EqCo (Zhu et al. 2020) as in
:mod:`patchcfg.pretrain.losses.moco_infonce`.

Shuffling BN: MoCo shuffles the key batch across GPUs so that batch-norm statistics cannot reveal
which key belongs to which query. Here each replica normalises its own keys; on several replicas
prefer ``backbone.sync_batchnorm: true`` (statistics over the global batch) — the momentum
encoder's batch statistics then never match the query encoder's sub-batch, which is the purpose of
the shuffle. With one device the leak is possible in principle but small for the batch sizes used.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from patchcfg.errors import UserError
from patchcfg.pretrain import register
from patchcfg.pretrain.losses.moco_infonce import mochi_negatives, moco_logits, moco_loss
from patchcfg.pretrain.momentum import MomentumEncoder
from patchcfg.pretrain.params import PretrainParams
from patchcfg.pretrain.two_view import TwoViewMethod
from patchcfg.train.distribute import replica_rows


@dataclass(frozen=True)
class Mochi:
    """``pretrain.mochi``: MoCHi(N, s, s')."""

    n: int
    s: int
    s_prime: int


@dataclass(frozen=True)
class EqCo:
    """``pretrain.eqco``."""

    alpha: float


@register("moco")
class MoCo(TwoViewMethod):
    """MoCo v2: query encoder+head trained, key encoder+head a momentum copy, a queue of keys."""

    summary = ("momentum encoder and a queue of negatives, MoCo v2 (He et al. 2020; Chen et al. 2020), "
               "optionally MoCHi hard-negative mixing and the EqCo margin.")
    config_keys = {
        "queue_size": {
            "description": "K: keys kept in the queue of negatives (at least batch_size).",
            "type": "integer",
            "minimum": 1,
            "default": 4096,
        },
        "momentum": {
            "description": "Momentum m of the key encoder: theta_k <- m * theta_k + (1 - m) * theta_q.",
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "default": 0.999,
        },
        "mochi": {
            "description": ("MoCHi hard-negative mixing (Kalantidis et al. 2020), MoCHi(N, s, s'); null = "
                            "off."),
            "type": ["object", "null"],
            "additionalProperties": False,
            "default": None,
            "properties": {
                "n": {
                    "description": ("N: the N hardest queue negatives of each query (highest similarity) "
                                    "are the ones mixed (at most queue_size)."),
                    "type": "integer",
                    "minimum": 1,
                    "default": 1024,
                },
                "s": {
                    "description": ("s: synthetic negatives per query, each a normalised mix a*n_i + "
                                    "(1-a)*n_j of two hardest negatives, a ~ U(0, 1)."),
                    "type": "integer",
                    "minimum": 0,
                    "default": 512,
                },
                "s_prime": {
                    "description": ("s': synthetic negatives per query mixing the query itself with a "
                                    "hardest negative, b*q + (1-b)*n_j, b ~ U(0, 0.5)."),
                    "type": "integer",
                    "minimum": 0,
                    "default": 256,
                },
            },
        },
        "eqco": {
            "description": ("EqCo (Zhu et al. 2020): rescale the negative term by alpha/K so the loss "
                            "behaves as with alpha negatives whatever K; null = off."),
            "type": ["object", "null"],
            "additionalProperties": False,
            "default": None,
            "properties": {
                "alpha": {
                    "description": "alpha: the number of negatives the loss is made equivalent to.",
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "default": 256,
                },
            },
        },
    }

    @dataclass(frozen=True)
    class Params(PretrainParams):
        queue_size: int
        momentum: float
        mochi: Mochi | None
        eqco: EqCo | None

    def build_state(self):
        p = self.params
        self.queue_size = p.queue_size
        if self.queue_size < self.global_batch_size:
            raise UserError(f"pretrain.queue_size ({self.queue_size}) must be at least batch_size "
                             f"({self.global_batch_size})")
        self.mochi = p.mochi
        self.eqco_alpha = p.eqco.alpha if p.eqco else None
        online = {"key_encoder": self.encoder, "key_head": self.head}  # checkpointed under these names
        self.momentum_encoder = MomentumEncoder(online, p.momentum)
        dim = int(self.head.output_shape[-1])
        initial = tf.math.l2_normalize(
            tf.random.stateless_normal((self.queue_size, dim), seed=[self.seed, 7]), axis=1)
        self.queue = tf.Variable(initial, trainable=False, name="moco_queue")

    def extra_state(self):
        return {**self.momentum_encoder.state(), "queue": self.queue}

    def contrastive_loss(self, view1, view2):
        q = tf.math.l2_normalize(self.embed(view1), axis=1)
        k = tf.stop_gradient(tf.math.l2_normalize(self.momentum_encoder(view2, training=True), axis=1))
        queue = tf.convert_to_tensor(self.queue)
        synthetic = None
        if self.mochi and (self.mochi.s or self.mochi.s_prime):
            offset, total = replica_rows(tf.shape(q)[0])
            seed = tf.stack([tf.cast(self.seed, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)])
            synthetic = mochi_negatives(q, queue, self.mochi.n, self.mochi.s, self.mochi.s_prime, seed,
                                        row_offset=offset, total_rows=total)["negatives"]
        logits = moco_logits(q, k, queue, self.temperature, synthetic=synthetic, eqco_alpha=self.eqco_alpha)
        loss = moco_loss(logits)
        # the proxy task's accuracy against the real negatives (synthetic ones would dominate it)
        real = logits[:, : 1 + self.queue_size]
        hit = tf.cast(tf.equal(tf.argmax(real, axis=1, output_type=tf.int32), 0), tf.float32)
        return loss, {"contrastive_acc": hit}, {"keys": k}

    def after_step(self, strategy, aux):
        """Momentum update of the key encoder and head, then enqueue the global batch's keys."""
        self.momentum_encoder.update(self.optimizer.iterations)
        keys = aux["keys"]
        if strategy.num_replicas_in_sync > 1:
            keys = strategy.gather(keys, axis=0)  # the global batch's keys, in replica order
        self.queue.assign(tf.concat([keys, self.queue[: self.queue_size - tf.shape(keys)[0]]], axis=0))


__all__ = ["MoCo"]
