"""Augmentation ops on a registry: one module per op (or per small family sharing its code).

An op module declares each name with :func:`register`: its family, a one-line doc, its parameters
(JSON schema, default, doc), the parameter a bare value sets, and a builder
``build(params) -> run(images, seeds)`` returning a batched function on float32 ``(B, H, W, C)`` in
[0, 1] whose random draws come from ``seeds`` (a :class:`~patchcfg.data.kernels.Seeds`).
Builders import TensorFlow themselves, so importing the registry stays cheap; every module of this
package is imported on first use of :data:`OPS` (a :class:`~patchcfg.registries.Registry`). The registry is the single source of the JSON
schema (``schemas/augmentation.schema.json``) and of the recipe reference (docs/data.md).

Adding an op is one file::

    # src/patchcfg/data/ops/posterize.py
    from patchcfg.data.ops import Param, number, register

    @register("posterize", "patchwork", "Keep the top `bits` bits of each 8-bit value.",
              {"bits": Param(number(1, 8, integer=True), 4, "Bits kept.")}, primary="bits")
    def posterize(params):
        import tensorflow as tf

        step = 2.0 ** (8 - params["bits"]) / 255.0

        def run(images, seeds):
            return tf.floor(images / step) * step
        return run
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from patchcfg.registries import Registry

FAMILIES = ("patchwork", "imgaug", "keras")

# --------------------------------------------------------------------------- parameter schemas


def number(lo=None, hi=None, *, integer=False, exclusive_lo=False) -> dict:
    """The schema of a number (an integer) within [lo, hi] (lo excluded with ``exclusive_lo``)."""
    schema: dict[str, Any] = {"type": "integer" if integer else "number"}
    if lo is not None:
        schema["exclusiveMinimum" if exclusive_lo else "minimum"] = lo
    if hi is not None:
        schema["maximum"] = hi
    return schema


def _bounds(lo, hi) -> str:
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f" >= {lo:g}"
    if lo is None:
        return f" <= {hi:g}"
    return f" in [{lo:g}, {hi:g}]"


def value_range(lo=None, hi=None) -> dict:
    """A number or a [low, high] pair, each within [lo, hi]."""
    item = number(lo, hi)
    where = _bounds(lo, hi)
    return {"anyOf": [dict(item, **{"x-kind": f"a number{where}"}),
                      {"type": "array", "items": item, "minItems": 2, "maxItems": 2,
                       "x-kind": f"a [low, high] pair{where}"}],
            "x-kind": f"a number or a [low, high] pair{where}"}


def xy_range(lo=None, hi=None) -> dict:
    """A number, a [low, high] pair, or {x: ..., y: ...} with either."""
    inner = value_range(lo, hi)
    return {"anyOf": [*inner["anyOf"],
                      {"type": "object", "additionalProperties": False,
                       "x-kind": "a mapping {x: ..., y: ...}",
                       "properties": {"x": dict(inner, description="Along the width."),
                                      "y": dict(inner, description="Along the height.")}}],
            "x-kind": "a number, a [low, high] pair or {x: ..., y: ...}"}


def nullable(schema: dict) -> dict:
    return {"anyOf": [{"type": "null"}, schema]}


PROB = dict(number(0, 1), **{"x-kind": "a probability in [0, 1]"})
BOOL_OR_PROB = {"anyOf": [{"type": "boolean"}, PROB], "x-kind": "true/false or a probability in [0, 1]"}
PAIR = {"type": "array", "items": number(0, 1), "minItems": 2, "maxItems": 2}


@dataclass
class Param:
    """One parameter of an op: its JSON schema, its default and what it means."""

    schema: dict
    default: Any
    doc: str


SOMETIMES = Param(PROB, 1.0, "Fraction of images this augmenter is applied to (imgaug's `Sometimes`).")


@dataclass
class Op:
    """One augmenter name: its parameters, which one a bare value sets, what it does, how it is built."""

    name: str
    family: str  # "patchwork" | "imgaug" | "keras"
    doc: str
    params: dict[str, Param]
    build: Callable[[dict], Callable]
    primary: str | None = None  # parameter a bare (non-mapping) value sets
    rgb_only: bool = False
    geometric: bool = False  # moves pixels: masks that go with an image take it with the same draws
    off_at_zero: str | None = None  # the step does nothing when this parameter is 0 or false
    required: tuple[str, ...] = ()

    def is_noop(self, params: dict) -> bool:
        """True when ``params`` (filled) cannot change an image: applied to no image, or switched off."""
        if params["sometimes"] == 0:
            return True
        if self.off_at_zero is None:
            return False
        value = params[self.off_at_zero]
        number_zero = isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0
        return value is False or number_zero


def _op_order(name: str, op: Op):
    return FAMILIES.index(op.family), op.name.lower()


#: Every op by name (each module of this package, and every op registered since), in family order
#: (patchwork, imgaug, keras), then by name.
OPS: Registry = Registry("augmentation op", __name__, order=_op_order,
                         schema=("augmentation.schema.json", "patchcfg.data.recipes:augmentation_schema"))


def register(name: str, family: str, doc: str, params: Mapping[str, Param], *, primary: str | None = None,
             rgb_only: bool = False, geometric: bool = False, off_at_zero: str | None = None,
             required: tuple[str, ...] = ()):
    """Decorator: make ``build(params) -> run(images, seeds)`` the augmenter ``name``.

    Every op also takes ``sometimes`` (:data:`SOMETIMES`). ``off_at_zero`` names the parameter at
    which the step is a no-op (dropped from the recipe when 0 or false).
    """
    if family not in FAMILIES:
        raise ValueError(f"augmentation op {name!r}: family must be one of {', '.join(FAMILIES)}")
    if primary is not None and primary not in params:
        raise ValueError(f"augmentation op {name!r}: primary {primary!r} is not one of its parameters")

    def decorator(build):
        OPS.add(name, Op(name=name, family=family, doc=doc, params={**params, "sometimes": SOMETIMES},
                         build=build, primary=primary, rgb_only=rgb_only, geometric=geometric,
                         off_at_zero=off_at_zero, required=tuple(required)), stacklevel=2)
        return build

    return decorator


#: Remove the op ``name`` (an op registered from outside this package, e.g. in a test).
unregister = OPS.unregister
