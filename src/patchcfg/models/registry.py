"""Backbone names: the registry of built-in builders, ``keras.applications`` names, and the spec.

Importing this module is cheap (no Keras): the built-in builders import their module when called,
and :func:`keras_application_names` imports Keras on first use.
"""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from patchcfg.errors import UserError
from patchcfg.registries import Registry

if TYPE_CHECKING:
    import keras


def _schema_defaults() -> dict[str, Any]:
    from patchcfg.config.schema import load_schemas

    properties = load_schemas()["backbone.schema.json"]["properties"]
    return {key: prop["default"] for key, prop in properties.items()}


#: Defaults of a backbone spec, read from ``schemas/backbone.schema.json``.
SPEC_DEFAULTS: dict[str, Any] = _schema_defaults()
POOLING = ("avg", "max", "none")
#: poolings of a vision transformer's tokens (``name: keras_hub``), besides :data:`POOLING`
TOKEN_POOLING = ("cls", "mean", "cls+mean")
#: the name of KerasHub preset backbones (:mod:`patchcfg.models.foundation`)
KERAS_HUB = "keras_hub"
_AUTO_BOOL = ("auto", True, False)

#: Backbone builders by name: the built-ins below and every ``@register_backbone``.
BACKBONES = Registry("backbone", home="patchcfg.models")


def register_backbone(name: str) -> Callable[[Callable[..., keras.Model]], Callable[..., keras.Model]]:
    """Register a backbone builder under ``name`` (a decorator).

    The builder is called as ``builder(input_shape, *, width, sync_batchnorm, **kwargs)`` and returns
    a ``keras.Model`` from ``input_shape`` to a feature map ``(batch, h, w, D)`` (or a vector
    ``(batch, D)``); :func:`build_backbone` adds pooling and loads weights. A name registered
    twice is an error naming both places.

    >>> @register_backbone("my_net")                                    # doctest: +SKIP
    ... def my_net(input_shape, *, width=1.0, sync_batchnorm=False):
    ...     ...
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"backbone name must be a non-empty string without ':', got {name!r}")
    return lambda builder: BACKBONES.add(name, builder, stacklevel=2)


#: Forget a backbone registered at run time.
unregister_backbone = BACKBONES.unregister


def get_builder(name: str) -> Callable[..., keras.Model]:
    """The builder registered as ``name`` (KeyError if there is none)."""
    return BACKBONES.get(name)


def available_backbones() -> list[str]:
    """Registered backbone names (sorted). ``keras.applications`` names and ``module:function``
    are accepted too (see :func:`keras_application_names`)."""
    return BACKBONES.names()


@functools.cache
def keras_application_names() -> list[str]:
    """Every ``keras.applications`` constructor name (``ResNet50``, ``MobileNetV2``, ...)."""
    import keras

    return sorted(
        name
        for name in dir(keras.applications)
        if name[:1].isupper() and callable(getattr(keras.applications, name))
    )


@register_backbone("resnet18")
def _resnet18(input_shape, *, width: float = 1.0, sync_batchnorm: bool = False) -> keras.Model:
    """Small-image ResNet-18: BasicBlock, [2, 2, 2, 2], D = 512·width."""
    from patchcfg.models.resnet import small_resnet

    return small_resnet(input_shape, (2, 2, 2, 2), "basic", width, sync_batchnorm, name="resnet18")


@register_backbone("resnet34")
def _resnet34(input_shape, *, width: float = 1.0, sync_batchnorm: bool = False) -> keras.Model:
    """Small-image ResNet-34: BasicBlock, [3, 4, 6, 3], D = 512·width."""
    from patchcfg.models.resnet import small_resnet

    return small_resnet(input_shape, (3, 4, 6, 3), "basic", width, sync_batchnorm, name="resnet34")


@register_backbone("resnet50")
def _resnet50(input_shape, *, width: float = 1.0, sync_batchnorm: bool = False) -> keras.Model:
    """Small-image ResNet-50: Bottleneck, [3, 4, 6, 3], D = 2048·width."""
    from patchcfg.models.resnet import small_resnet

    return small_resnet(
        input_shape, (3, 4, 6, 3), "bottleneck", width, sync_batchnorm, name="resnet50"
    )


@register_backbone("tiny")
def _tiny(input_shape, *, width: float = 1.0, sync_batchnorm: bool = False) -> keras.Model:
    """Three 3×3 conv layers (8, 16, 16 filters × width), D = 16·width: for tests and demos."""
    from patchcfg.models.resnet import tiny_convnet

    return tiny_convnet(input_shape, width, sync_batchnorm, name="tiny")


# --------------------------------------------------------------------------- the spec


def normalize_spec(spec: dict | str | None) -> dict[str, Any]:
    """Check a backbone spec and fill in defaults; a bare string is taken as ``{name: ...}``.

    Raises :class:`UserError` for unknown keys (with the closest valid key) and wrong types.
    """
    if spec is None:
        spec = {}
    elif isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict):
        raise UserError(f"backbone: expected a mapping such as {{name: resnet18}}, got {spec!r}")
    unknown = sorted(set(spec) - set(SPEC_DEFAULTS))
    if unknown:
        problems = [
            f"backbone: unknown key {key!r}{did_you_mean(key, list(SPEC_DEFAULTS))}" for key in unknown
        ]
        raise UserError("\n".join(problems) + f"\nvalid keys: {', '.join(SPEC_DEFAULTS)}")
    if not isinstance(spec.get("kwargs") or {}, dict):
        raise UserError(f"backbone.kwargs: expected a mapping, got {spec['kwargs']!r}")
    out = {**SPEC_DEFAULTS, **spec}
    out["kwargs"] = dict(out["kwargs"] or {})

    if not isinstance(out["name"], str) or not out["name"].strip():
        raise UserError(f"backbone.name: expected a backbone name, got {out['name']!r}")
    out["name"] = out["name"].strip()
    width = out["width"]
    if isinstance(width, bool) or not isinstance(width, int | float) or not width > 0:
        raise UserError(f"backbone.width: expected a number > 0, got {width!r}")
    out["width"] = float(width)
    weights = out["weights"]
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if weights is not None and not isinstance(weights, str):
        raise UserError(f"backbone.weights: expected null, imagenet or a file path, got {weights!r}")
    if isinstance(weights, str) and weights.strip().lower() == "imagenet":
        weights = "imagenet"
    out["weights"] = weights
    pooling = "none" if out["pooling"] is None else out["pooling"]
    hub = out["name"].lower() == KERAS_HUB
    if pooling not in POOLING + TOKEN_POOLING:
        raise UserError(f"backbone.pooling: expected one of {', '.join(POOLING + TOKEN_POOLING)}, got {pooling!r}")
    if pooling in TOKEN_POOLING and not hub:
        raise UserError(f"backbone.pooling: {pooling} pools a vision transformer's tokens: it needs "
                        f"name: keras_hub (this backbone is {out['name']}); use avg, max or none")
    out["pooling"] = pooling
    if hub and not out["preset"]:
        raise UserError("backbone.preset: name: keras_hub needs a preset: a KerasHub preset folder "
                        "(what Backbone.save_to_preset writes; `patchcfg weights fetch` makes one)")
    if not hub and out["preset"]:
        raise UserError(f"backbone.preset: a preset is read only with name: keras_hub "
                        f"(this backbone is {out['name']}); remove preset or set name: keras_hub")
    if isinstance(out["preset"], os.PathLike):
        out["preset"] = os.fspath(out["preset"])
    size = out["image_size"]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise UserError(f"backbone.image_size: expected a whole number of pixels >= 1 or null, got {size!r}")
    if size is not None and not hub:
        raise UserError(f"backbone.image_size: applies to name: keras_hub presets (this backbone is "
                        f"{out['name']}, which runs at data.imshape); remove image_size")
    if not isinstance(out["trainable"], bool):
        raise UserError(f"backbone.trainable: expected true or false, got {out['trainable']!r}")
    if not isinstance(out["sync_batchnorm"], bool):
        raise UserError(f"backbone.sync_batchnorm: expected true or false, got {out['sync_batchnorm']!r}")
    for key in ("channel_adapter", "preprocess"):
        if out[key] not in _AUTO_BOOL or isinstance(out[key], int) and not isinstance(out[key], bool):
            raise UserError(f"backbone.{key}: expected auto, true or false, got {out[key]!r}")
    return out


def did_you_mean(name: str, choices: list[str]) -> str:
    by_lower: dict[str, str] = {}
    for choice in choices:
        by_lower.setdefault(choice.lower(), choice)
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(by_lower[c]) for c in close) + "?"


def _unknown_name_error(name: str) -> UserError:
    builtin = available_backbones()
    apps = keras_application_names()
    return UserError(
        f"backbone.name: unknown backbone {name!r}{did_you_mean(name, builtin + apps)}\n"
        f"available: {', '.join(builtin)}; "
        f"any keras.applications constructor ({', '.join(apps)}); "
        "or 'module:function' for your own builder"
    )


def resolve_name(name: str) -> tuple[str, str]:
    """``(kind, canonical_name)`` with kind ``function``, ``registered`` or ``keras``."""
    if ":" in name:
        return "function", name
    if name.lower() == KERAS_HUB:
        return "keras_hub", KERAS_HUB
    if name in BACKBONES:
        return "registered", name
    if name in keras_application_names():
        return "keras", name
    matches = [("registered", n) for n in BACKBONES if n.lower() == name.lower()]
    matches += [("keras", n) for n in keras_application_names() if n.lower() == name.lower()]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        options = " or ".join(
            f"{n!r} ({'small-image, built in' if kind == 'registered' else 'keras.applications'})"
            for kind, n in matches
        )
        raise UserError(f"backbone.name: {name!r} is ambiguous; write it exactly as {options}")
    raise _unknown_name_error(name)


