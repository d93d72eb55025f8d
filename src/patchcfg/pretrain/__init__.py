"""Self-supervised pretraining methods, one file each, registered by name.

Importing this package is cheap (no TensorFlow): the built-in methods are named after the modules
of this package (but the shared ``base``, ``params``, ``two_view`` and ``momentum``) and each is
imported when it is first asked for (:func:`get_method`).

    >>> from patchcfg.pretrain import method_names
    >>> method_names()  # doctest: +NORMALIZE_WHITESPACE
    ['barlow_twins', 'byol', 'context_encoder', 'deepcluster', 'detcon', 'detcon_b', 'hcl', 'moco',
     'multitask', 'nnclr', 'simclr', 'simsiam', 'vicreg']

Adding a method is one file, ``patchcfg/pretrain/<name>.py``: a subclass of
:class:`patchcfg.pretrain.two_view.TwoViewMethod` (contrastive) or
:class:`patchcfg.pretrain.base.PretrainMethod` decorated ``@register("<name>")``, with its
``summary``, its ``config_keys`` (each key's schema and default) and the ``Params`` dataclass that
reads them. ``patchcfg schema --update-schemas`` writes its name and keys into
``schemas/pretrain.schema.json`` (:func:`pretrain_schema`).
"""

from __future__ import annotations

import copy

from patchcfg.registries import Registry


def _name_class(name: str, cls) -> None:
    cls.name = name


#: Every method class by name: each method module of this package, and every one registered since.
METHODS = Registry("pretraining method", __name__, lazy=True, shared=("base", "params", "two_view", "momentum"),
                   on_register=_name_class, schema=("pretrain.schema.json", f"{__name__}:external_methods_schema"))

#: Class decorator: make a :class:`~patchcfg.pretrain.base.PretrainMethod` available as ``name``.
register = METHODS.register
#: Forget a method registered at run time.
unregister = METHODS.unregister
method_names = METHODS.names
#: The method class registered as ``name`` (importing its built-in module when needed).
get_method = METHODS.get


def _declarations(cls) -> list[tuple[type, dict[str, dict]]]:
    """(class, its own ``config_keys``) along a method's bases, the furthest first."""
    return [(klass, vars(klass)["config_keys"]) for klass in reversed(cls.__mro__)
            if vars(klass).get("config_keys")]


def method_keys(cls) -> dict[str, dict]:
    """A method's keys of ``pretrain`` (name -> JSON schema): its ``config_keys`` and its bases'
    (a class adds keys to its bases'; it does not declare one of theirs again)."""
    keys: dict[str, dict] = {}
    for klass, declared in _declarations(cls):
        again = sorted(keys.keys() & declared.keys())
        if again:
            raise ValueError(f"{klass.__name__} declares {', '.join(again)} again: a base of it declares them")
        keys.update(declared)
    return keys


def external_methods_schema(schema: dict) -> dict:
    """pretrain.schema.json's contents with the methods registered from outside patchcfg added."""
    return pretrain_schema(schema, [METHODS[name] for name in METHODS.external()], replace=False)


def _branch(names: list[str], keys: dict[str, dict]) -> dict:
    """``if method is one of names then these keys``."""
    method = {"const": names[0]} if len(names) == 1 else {"enum": names}
    return {"if": {"properties": {"method": method}, "required": ["method"]},
            "then": {"properties": copy.deepcopy(keys)}}


def pretrain_schema(schema: dict, methods: list, *, replace: bool = True) -> dict:
    """pretrain.schema.json's contents with ``methods`` (classes) written in: the ``method`` enum
    and description, and ``if method: <names> then <keys>`` branches (the default of ``method`` kept).
    ``replace``: these are every method (else they are added to those there, a branch each)."""
    schema = copy.deepcopy(schema)
    method = schema["properties"]["method"]
    names = [] if replace else list(method["enum"])
    about = [] if replace else [method["description"]]
    added = [cls for cls in methods if cls.name not in names]
    for cls in added:
        method_keys(cls)  # refuses a key declared twice
        names.append(cls.name)
        about.append(f"{cls.name}: {cls.summary}".strip())
    method.update(description=" ".join(about), enum=names)
    if replace:  # a method's keys, and those of the mixins it reads, in a branch of its own; a base
        # method's keys in one branch naming every method that reads them
        readers: dict[type, list[str]] = {}
        keys: dict[type, dict[str, dict]] = {}
        for cls in added:
            for klass, declared in _declarations(cls):
                owner = klass if klass in added else cls
                readers.setdefault(owner, [])
                if cls.name not in readers[owner]:
                    readers[owner].append(cls.name)
                keys.setdefault(owner, {}).update(declared)
        schema["allOf"] = [_branch(readers[owner], keys[owner]) for owner in readers]
    else:
        schema["allOf"] = [*schema["allOf"], *(_branch([cls.name], method_keys(cls)) for cls in added)]
    return schema
