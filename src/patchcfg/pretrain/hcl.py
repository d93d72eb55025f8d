"""HCL: contrastive learning with hard negative samples (reweighting and debiasing).

Robinson, Chuang, Sra & Jegelka, "Contrastive Learning with Hard Negative Samples", ICLR 2021.
Like SimCLR (two views, in-batch negatives gathered over replicas), but the negatives' sum is
replaced by an importance-weighted, debiased estimate: :mod:`patchcfg.pretrain.losses.hcl`.
With ``beta = tau_plus = 0`` it is exactly SimCLR's NT-Xent.
"""

from __future__ import annotations

from dataclasses import dataclass

from patchcfg.pretrain import register
from patchcfg.pretrain.losses.hcl import hcl_loss
from patchcfg.pretrain.params import PretrainParams
from patchcfg.pretrain.two_view import TwoViewMethod


@register("hcl")
class HCL(TwoViewMethod):
    """HCL: SimCLR's views and head with the hard-negative, debiased loss."""

    summary = "hard-negative reweighting and debiasing (Robinson et al. 2021)."
    config_keys = {
        "beta": {
            "description": ("beta: concentration of the hard-negative weights exp(beta * sim / t); 0 = "
                            "uniform weights."),
            "type": "number",
            "minimum": 0,
            "default": 0.5,
        },
        "tau_plus": {
            "description": ("tau+: class prior, the probability that a 'negative' shares the anchor's "
                            "class (debiasing); 0 = no debiasing."),
            "type": "number",
            "minimum": 0,
            "exclusiveMaximum": 1,
            "default": 0.1,
        },
    }

    @dataclass(frozen=True)
    class Params(PretrainParams):
        beta: float
        tau_plus: float

    def pair_loss(self, z1, z2, *, z1_all, z2_all, offset):
        return hcl_loss(z1, z2, self.temperature, self.params.beta, self.params.tau_plus,
                        z1_all=z1_all, z2_all=z2_all, offset=offset), {}
