"""Self-supervised pretraining methods, one file each, registered by name.

Importing this package is cheap (no TensorFlow). A method module registers its class with
:func:`register`; :func:`get_method` imports the built-in module for a name on first use.

    >>> from patchcfg.pretrain import method_names
    >>> method_names()  # doctest: +NORMALIZE_WHITESPACE
    ['barlow_twins', 'byol', 'context_encoder', 'deepcluster', 'detcon', 'detcon_b', 'hcl', 'moco',
     'multitask', 'nnclr', 'simclr', 'simsiam', 'vicreg']

Adding a method: write ``patchcfg/pretrain/<name>.py`` with a subclass of
:class:`patchcfg.pretrain.two_view.TwoViewMethod` (contrastive) or
:class:`patchcfg.pretrain.base.PretrainMethod` decorated ``@register("<name>")`` (its keys in a
``Params`` dataclass, its loss in :mod:`patchcfg.pretrain.losses`), add its module to ``BUILTIN``
and its name and keys, with their defaults, to ``schemas/pretrain.schema.json``.
"""

from __future__ import annotations

from patchcfg.registries import Registry

#: Built-in methods: name -> module that registers it.
BUILTIN: dict[str, str] = {
    "simclr": "patchcfg.pretrain.simclr",
    "moco": "patchcfg.pretrain.moco",
    "hcl": "patchcfg.pretrain.hcl",
    "deepcluster": "patchcfg.pretrain.deepcluster",
    "context_encoder": "patchcfg.pretrain.context_encoder",
    "detcon": "patchcfg.pretrain.detcon",
    "multitask": "patchcfg.pretrain.multitask",
    "byol": "patchcfg.pretrain.byol",
    "simsiam": "patchcfg.pretrain.simsiam",
    "vicreg": "patchcfg.pretrain.vicreg",
    "nnclr": "patchcfg.pretrain.nnclr",
    "barlow_twins": "patchcfg.pretrain.barlow_twins",
    "detcon_b": "patchcfg.pretrain.detcon_b",
}


def _name_class(name: str, cls) -> None:
    cls.name = name


_METHODS = Registry("pretraining method", BUILTIN, on_register=_name_class)

#: Class decorator: make a :class:`~patchcfg.pretrain.base.PretrainMethod` available as ``name``.
register = _METHODS.register
#: Forget a method registered at run time.
unregister = _METHODS.unregister
method_names = _METHODS.names
#: The method class registered as ``name`` (importing its built-in module when needed).
get_method = _METHODS.get
