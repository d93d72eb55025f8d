"""Self-supervised pretraining methods, one file each, registered by name.

Importing this package is cheap (no TensorFlow). A method module registers its class with
:func:`register`; :func:`get_method` imports the built-in module for a name on first use.

    >>> from patchcfg.pretrain import method_names
    >>> method_names()
    ['context_encoder', 'deepcluster', 'detcon', 'hcl', 'moco', 'multitask', 'simclr']

Adding a method: write ``patchcfg/pretrain/<name>.py`` with a subclass of
:class:`patchcfg.pretrain.base.PretrainMethod` decorated ``@register("<name>")``, add its module to
``BUILTIN`` and its name and keys to ``schemas/pretrain.schema.json``.
"""

from __future__ import annotations

import importlib

#: Built-in methods: name -> module that registers it.
BUILTIN: dict[str, str] = {
    "simclr": "patchcfg.pretrain.simclr",
    "moco": "patchcfg.pretrain.moco",
    "hcl": "patchcfg.pretrain.hcl",
    "deepcluster": "patchcfg.pretrain.deepcluster",
    "context_encoder": "patchcfg.pretrain.context_encoder",
    "detcon": "patchcfg.pretrain.detcon",
    "multitask": "patchcfg.pretrain.multitask",
}

_REGISTRY: dict[str, type] = {}


def register(name: str):
    """Class decorator: make a :class:`~patchcfg.pretrain.base.PretrainMethod` available as ``name``."""

    def decorator(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def method_names() -> list[str]:
    return sorted(set(BUILTIN) | set(_REGISTRY))


def get_method(name: str) -> type:
    """The method class registered as ``name`` (importing its built-in module when needed)."""
    if name not in _REGISTRY and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name not in _REGISTRY:
        raise KeyError(f"unknown pretraining method {name!r}; known: {', '.join(method_names())}")
    return _REGISTRY[name]
