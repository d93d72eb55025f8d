"""A method's parameters: a frozen dataclass read from the resolved ``pretrain`` section.

``schemas/pretrain.schema.json`` states every default; :func:`build_params` is the one place a
method's parameters are made, and it only reads them, so a key missing from the section is a
config that was never resolved (``patchcfg.config.load_config`` resolves files;
``patchcfg.config.schema.fill_defaults`` fills a dict written in code). A method declares what it
reads by extending :class:`PretrainParams`::

    @dataclass(frozen=True)
    class Params(PretrainParams):
        queue_size: int
        mochi: Mochi | None          # a nested section, or null

Fields have no defaults of their own. A key that the schema leaves optional without a default
(a value that may be absent) is declared with :func:`optional` and reads as None when absent.

    >>> from patchcfg.config.schema import fill_defaults
    >>> section = fill_defaults({"name": "x", "pretrain": {"method": "simclr"}})["pretrain"]
    >>> build_params(PretrainParams, section).projection.dim
    128
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_OPTIONAL = "optional"


def optional():
    """A field for a key the schema leaves optional without a default: None when absent."""
    return dataclasses.field(metadata={_OPTIONAL: True})


@dataclass(frozen=True)
class Projection:
    """``pretrain.projection``: the head between the pooled features and the loss."""

    depth: int
    units: int
    dim: int
    batchnorm: bool
    output_batchnorm: bool


@dataclass(frozen=True)
class Predictor:
    """``pretrain.predictor`` (BYOL, SimSiam, NNCLR, DetCon_B): the MLP on the projection."""

    units: int
    batchnorm: bool


def predictor_key(description: str, units: int, *, nullable: bool = False) -> dict:
    """The schema of ``pretrain.predictor`` (read as :class:`Predictor`) for a method's
    ``config_keys``: its description and default width are the method's (``nullable``: null means
    no predictor)."""
    return {"description": description, "type": ["object", "null"] if nullable else "object",
            "additionalProperties": False, "default": {},
            "properties": {
                "units": {"description": "Width of the predictor's hidden layer (its output is projection.dim wide).",
                          "type": "integer", "minimum": 1, "default": units},
                "batchnorm": {"description": ("BatchNormalization after the hidden layer (synchronised across "
                                              "replicas when backbone.sync_batchnorm is true)."),
                              "type": "boolean", "default": True}}}


@dataclass(frozen=True)
class Monitor:
    """``pretrain.monitor``: the linear probe and the views image."""

    every: int
    C: float
    validation_fraction: float
    views_image: bool


@dataclass(frozen=True)
class PretrainParams:
    """The keys of ``pretrain`` every method reads."""

    method: str
    epochs: int
    batch_size: int
    steps_per_epoch: int | None
    temperature: float
    projection: Projection
    monitor: Monitor


@dataclass(frozen=True)
class BootstrapParams(PretrainParams):
    """The keys of BYOL's networks (:class:`~patchcfg.pretrain.momentum.Bootstrap`): BYOL, DetCon_B."""

    tau_base: float
    predictor: Predictor


def _convert(hint, value, where: str):
    """``value`` as the annotation ``hint`` says: sections become dataclasses, lists tuples."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        for option in typing.get_args(hint):
            converted = _convert(option, value, where)
            if converted is not value or isinstance(value, _type_of(option)):
                return converted
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        return build_params(hint, value, where)
    if origin is tuple and isinstance(value, list | tuple):
        item = typing.get_args(hint)[0]
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    return value


def _type_of(hint) -> type | tuple:
    origin = typing.get_origin(hint)
    if origin is not None:
        return origin
    return hint if isinstance(hint, type) else object


def resolved_section(section: Mapping[str, Any]) -> dict:
    """A partial ``pretrain`` section (written in code) with the schema's defaults filled in."""
    from patchcfg.config.schema import fill_defaults

    return fill_defaults({"pretrain": copy.deepcopy(dict(section))})["pretrain"]


def build_params(cls: type, section: Mapping[str, Any], where: str = "pretrain"):
    """``cls`` (a dataclass) with each field read from ``section[field]`` of a resolved config."""
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        if field.name in section:
            values[field.name] = _convert(hints[field.name], section[field.name], f"{where}.{field.name}")
        elif field.metadata.get(_OPTIONAL):
            values[field.name] = None
        else:
            raise ValueError(f"{where}.{field.name} is missing: methods read a resolved config, whose "
                             "defaults come from the schemas (patchcfg.config.load_config, or "
                             "patchcfg.config.schema.fill_defaults for a dict)")
    return cls(**values)


__all__ = ["PretrainParams", "BootstrapParams", "Projection", "Predictor", "Monitor", "build_params",
           "optional", "resolved_section"]
