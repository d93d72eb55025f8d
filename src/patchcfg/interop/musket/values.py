"""Small readers of Musket values, and where our schemas stand (no TensorFlow)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jsonschema
import yaml

AUGMENTATION = "augmentation.schema.json"
FINETUNE = "finetune.schema.json"


def dotted(path: Iterable) -> str:
    return ".".join(str(p) for p in path)


def as_int(value: Any) -> int | None:
    """An integer, also from an integral float (YAML ``10.0``); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def as_number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def show(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def schema_node(schema_id: str, pointer: str) -> dict:
    """The node at ``pointer`` in the schema file ``schema_id``."""
    from patchcfg.config.schema import load_schemas

    node: Any = load_schemas()[schema_id]
    for part in pointer.strip("/").split("/") if pointer.strip("/") else []:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def fits(schema_id: str, pointer: str, value: Any) -> str | None:
    """None when ``value`` is valid for the schema at ``schema_id#pointer``, else why not."""
    from patchcfg.config.schema import validator

    check = validator({"$ref": f"{schema_id}#{pointer}"})
    error = jsonschema.exceptions.best_match(check.iter_errors(value))
    if error is None:
        return None
    kind = schema_node(schema_id, pointer).get("x-kind")
    if kind and not error.absolute_path:
        return f"expected {kind}"
    where = dotted(error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


def mapping_form(schema_id: str, pointer: str, depth: int = 0) -> str | None:
    """The pointer of the ``{param: ...}`` form of an augmenter or callback schema, if it has one."""
    node = schema_node(schema_id, pointer)
    if not isinstance(node, dict) or depth > 8:
        return None
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        return mapping_form(schema_id, ref[1:], depth + 1)
    is_object = node.get("type", "object") in ("object", ["object", "null"])
    if isinstance(node.get("properties"), dict) and is_object:
        return pointer
    for key in ("then", "else"):
        if key in node and (found := mapping_form(schema_id, f"{pointer}/{key}", depth + 1)):
            return found
    for key in ("anyOf", "oneOf", "allOf"):
        for i in range(len(node.get(key, []))):
            if found := mapping_form(schema_id, f"{pointer}/{key}/{i}", depth + 1):
                return found
    return None


def items_of(value: Any) -> list[tuple[Any, Any, tuple]] | None:
    """``{name: args}`` or ``[{name: args}, ...]`` as (name, args, relative path); None if neither."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [(k, v, (k,)) for k, v in value.items()]
    if isinstance(value, list):
        out = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                out.append((item, None, (i,)))
            elif isinstance(item, dict) and len(item) == 1:
                (k, v), = item.items()
                out.append((k, v, (i, k)))
            else:
                return None
        return out
    return None


def negatives(value: Any) -> str | int | None:
    if value in ("none", "real"):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    number = as_int(value)
    return number if number is not None and number >= 0 else None
