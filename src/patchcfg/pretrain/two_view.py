"""The base of methods that compare two augmented views of each image (SimCLR, HCL, MoCo, DetCon).

A batch is a pair of views of the same images. Both go through encoder and head in one batch (batch
norm sees all 2n images), the embeddings of every replica are gathered, so each anchor meets the
whole global batch as negatives (exactly as on one device), and :meth:`TwoViewMethod.pair_loss`,
the contrastive hook, scores the local rows. A method with other inputs (a momentum key encoder,
regions) overrides :meth:`TwoViewMethod.contrastive_loss` instead::

    @register("mymethod")
    class MyMethod(TwoViewMethod):
        def pair_loss(self, z1, z2, *, z1_all, z2_all, offset):
            loss = my_loss(z1, z2, self.temperature, z1_all=z1_all, z2_all=z2_all, offset=offset)
            return loss, {}                       # per example (local batch,), per-example logs
"""

from __future__ import annotations

import tensorflow as tf

from patchcfg.pretrain.base import PretrainMethod
from patchcfg.train.distribute import gather_rows, global_mean


class TwoViewMethod(PretrainMethod):
    """Paired views, negatives gathered over replicas, a contrastive hook."""

    views = 2

    def embed_pair(self, view1, view2, training: bool = True):
        """Both views through encoder and head in one batch (batch norm sees all 2n images)."""
        n = tf.shape(view1)[0]
        z = self.embed(tf.concat([view1, view2], axis=0), training=training)
        return z[:n], z[n:]

    def pair_loss(self, z1, z2, *, z1_all, z2_all, offset):
        """The contrastive hook (replica context): the per-example loss ``(n,)`` of the local rows
        ``z1[i]``, ``z2[i]`` (rows ``offset + i`` of the global ``z1_all``, ``z2_all``) and a dict of
        per-example values to log."""
        raise NotImplementedError(f"{type(self).__name__} defines neither pair_loss nor contrastive_loss")

    def contrastive_loss(self, view1, view2):
        """Replica context: ``(per_example_loss (n,), {name: per_example_value}, aux)``; by default
        both views embedded, gathered over replicas and scored by :meth:`pair_loss`."""
        z1, z2 = self.embed_pair(view1, view2)
        (z1_all, z2_all), offset = gather_rows(z1, z2)  # one collective for the two views
        loss, logs = self.pair_loss(z1, z2, z1_all=z1_all, z2_all=z2_all, offset=offset)
        return loss, logs, {}

    def compute_loss(self, batch, global_batch_size: int):
        view1, view2 = batch
        per_example, per_example_logs, aux = self.contrastive_loss(view1, view2)
        logs = {k: global_mean(v, global_batch_size) for k, v in per_example_logs.items()}
        return global_mean(per_example, global_batch_size), logs, aux
