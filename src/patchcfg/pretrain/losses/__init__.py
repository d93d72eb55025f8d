"""The pretraining losses: pure functions, one module each, registered by name.

Each takes embeddings (or images) and returns a per-example loss (and, for some, what they count);
each cites its paper and shows a tiny example in its docstring. Importing this package is cheap (no
TensorFlow); :func:`get_loss` imports a built-in module on first use.

    >>> from patchcfg.pretrain.losses import loss_names
    >>> loss_names()[:4]
    ['barlow_twins', 'byol', 'detcon_b', 'hcl']

Adding a loss: write ``patchcfg/pretrain/losses/<name>.py`` with a function decorated
``@register_loss("<name>")`` (and add the module to ``BUILTIN`` when it ships with patchcfg).
"""

from __future__ import annotations

from patchcfg.registries import Registry

#: Built-in losses: name -> module that registers it.
BUILTIN: dict[str, str] = {
    "nt_xent": "patchcfg.pretrain.losses.nt_xent",
    "hcl": "patchcfg.pretrain.losses.hcl",
    "moco_infonce": "patchcfg.pretrain.losses.moco_infonce",
    "region_infonce": "patchcfg.pretrain.losses.region_infonce",
    "inpainting": "patchcfg.pretrain.losses.inpainting",
    "masked_task_bce": "patchcfg.pretrain.losses.multitask",
    "uncertainty_weighting": "patchcfg.pretrain.losses.multitask",
    "byol": "patchcfg.pretrain.losses.byol",
    "simsiam": "patchcfg.pretrain.losses.simsiam",
    "vicreg": "patchcfg.pretrain.losses.vicreg",
    "nnclr": "patchcfg.pretrain.losses.nnclr",
    "barlow_twins": "patchcfg.pretrain.losses.barlow_twins",
    "detcon_b": "patchcfg.pretrain.losses.detcon_b",
}

_LOSSES = Registry("pretraining loss", BUILTIN)

#: Function decorator: make a pretraining loss available as ``name``.
register_loss = _LOSSES.register
#: Forget a loss registered at run time.
unregister_loss = _LOSSES.unregister
loss_names = _LOSSES.names
#: The loss function registered as ``name`` (importing its built-in module when needed).
get_loss = _LOSSES.get
