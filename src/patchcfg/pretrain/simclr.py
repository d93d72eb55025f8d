"""SimCLR: NT-Xent over in-batch negatives, optionally decoupled (DCL).

Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020. Yeh et al., "Decoupled Contrastive Learning", ECCV 2022.

Under ``tf.distribute`` the embeddings of every replica are gathered (:mod:`patchcfg.pretrain.two_view`),
so each anchor is contrasted with the whole global batch, exactly as on one device.
"""

from __future__ import annotations

from dataclasses import dataclass

from patchcfg.pretrain import register
from patchcfg.pretrain.losses.nt_xent import nt_xent_terms
from patchcfg.pretrain.params import PretrainParams
from patchcfg.pretrain.two_view import TwoViewMethod


@register("simclr")
class SimCLR(TwoViewMethod):
    """SimCLR: both views through the same encoder and head; NT-Xent (or DCL) over the global batch."""

    summary = "NT-Xent over in-batch negatives (Chen et al. 2020)."
    config_keys = {
        "decoupled": {
            "description": ("Decoupled contrastive loss (DCL, Yeh et al. 2022): the positive pair is left "
                            "out of the denominator."),
            "type": "boolean",
            "default": False,
        },
    }

    @dataclass(frozen=True)
    class Params(PretrainParams):
        decoupled: bool

    def pair_loss(self, z1, z2, *, z1_all, z2_all, offset):
        loss, hit = nt_xent_terms(z1, z2, self.temperature, z1_all=z1_all, z2_all=z2_all, offset=offset,
                                  decoupled=self.params.decoupled)
        return loss, {"contrastive_acc": hit}
