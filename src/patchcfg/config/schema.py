"""JSON Schema validation of configs, with errors a person can act on.

The schemas in ``patchcfg/schemas/`` are the source of truth: they validate, they carry the defaults
(``default``) and the documentation (``description``). Every problem is reported, each as
``file:line: key.path: what is wrong`` with "did you mean" for unknown keys and enum values.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import jsonschema
from referencing import Registry, Resource

MAIN_SCHEMA = "config.schema.json"


def schema_dir() -> Path:
    """The folder of schema files, shipped inside the package (``schemas/`` at the top of the
    repository is a link to it, for editors and readers)."""
    return Path(__file__).resolve().parents[1] / "schemas"


@lru_cache(maxsize=1)
def _schema_files() -> dict[str, dict]:
    schemas = {}
    for path in sorted(schema_dir().glob("*.schema.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        schemas[contents.get("$id", path.name)] = contents
    return schemas


def _registered_from_outside() -> tuple:
    """What the registries that write into schemas hold from outside patchcfg (plugins, tests):
    the key the schemas are cached by."""
    from patchcfg.registries import REGISTRIES

    return tuple((id(r), r.version) for r in REGISTRIES if r.schema is not None and r.external())


def load_schemas() -> dict[str, dict]:
    """Every schema file by its ``$id`` (its file name). The files hold patchcfg's own methods,
    strategies, ops and stages; those registered since (a plugin's) are written in here too."""
    return _schemas_with(_registered_from_outside())


@lru_cache(maxsize=8)
def _schemas_with(outside: tuple) -> dict[str, dict]:
    from patchcfg.registries import REGISTRIES

    schemas = _schema_files()
    if not outside:
        return schemas
    schemas = copy.deepcopy(schemas)
    for reg in REGISTRIES:
        if reg.schema is not None and reg.external():
            reg.write_schema(schemas)
    return schemas


def registry() -> Registry:
    return _referencing(_registered_from_outside())


@lru_cache(maxsize=8)
def _referencing(outside: tuple) -> Registry:
    return Registry().with_resources(
        (uri, Resource.from_contents(contents)) for uri, contents in _schemas_with(outside).items())


def main_schema() -> dict:
    return load_schemas()[MAIN_SCHEMA]


def validator(schema: dict | None = None) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema or main_schema(), registry=registry())


def bundled_schema() -> dict:
    """One self-contained schema (every file under ``$defs``), for editors and ``patchcfg schema``."""
    schemas = load_schemas()
    main = copy.deepcopy(schemas[MAIN_SCHEMA])
    defs = main.setdefault("$defs", {})
    for uri, contents in schemas.items():
        if uri != MAIN_SCHEMA:
            defs[uri] = copy.deepcopy(contents)
    return main


# --------------------------------------------------------------------------- walking the schema

def follow_refs(schema: dict, base: str) -> tuple[dict, str]:
    """Follow ``$ref`` chains; return the target schema and its base URI."""
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and seen < 32:
        uri = urljoin(base, schema["$ref"])
        document, _, fragment = uri.partition("#")
        resolved = registry().resolver(base_uri=document).lookup(uri)
        schema, base = resolved.contents, document
        seen += 1
    return schema, base


def _branches(schema: dict, instance: Any, base: str):
    """Subschemas that apply to ``instance`` besides ``schema`` itself: allOf and matching if/then."""
    yield from schema.get("allOf", [])
    if "if" in schema:
        condition, cbase = follow_refs(schema["if"], base)
        matched = validator(condition).is_valid(instance) if isinstance(condition, dict) else bool(condition)
        branch = schema.get("then" if matched else "else")
        if branch is not None:
            yield branch


def _applicable(schema: dict, instance: Any, base: str):
    """(schema, base) pairs that describe ``instance``: itself, its $ref, allOf and matched if/then."""
    schema, base = follow_refs(schema, base)
    if not isinstance(schema, dict):
        return
    yield schema, base
    for sub in _branches(schema, instance, base):
        yield from _applicable(sub, instance, base)


def allowed_keys(schema: dict, instance: Any, base: str = MAIN_SCHEMA) -> list[str]:
    keys: list[str] = []
    for sub, _ in _applicable(schema, instance, base):
        keys.extend(k for k in sub.get("properties", {}) if k not in keys)
    return keys


_MISSING = object()


def _default_of(prop: Any, base: str) -> Any:
    """The default written on the property itself (a referenced file's own default does not count:
    a stage section such as ``pretrain`` exists only when the config declares it)."""
    return prop["default"] if isinstance(prop, dict) and "default" in prop else _MISSING


def fill_defaults(instance: Any, schema: dict | None = None, base: str = MAIN_SCHEMA) -> Any:
    """Set every missing key that has a schema ``default``, in place.

    Parents are filled before their if/then branches are read, so a method's own defaults apply
    once ``method`` itself has its default.
    """
    schema = schema or main_schema()
    if isinstance(instance, dict):
        changed = True
        while changed:
            changed = False
            for sub, sbase in list(_applicable(schema, instance, base)):
                for key, prop in sub.get("properties", {}).items():
                    default = _default_of(prop, sbase) if key not in instance else _MISSING
                    if default is not _MISSING:
                        instance[key] = copy.deepcopy(default)
                        changed = True
        for sub, sbase in list(_applicable(schema, instance, base)):
            for key, prop in sub.get("properties", {}).items():
                if key in instance:
                    fill_defaults(instance[key], prop, sbase)
    elif isinstance(instance, list):
        for sub, sbase in list(_applicable(schema, instance, base)):
            items = sub.get("items")
            if isinstance(items, dict):
                for item in instance:
                    fill_defaults(item, items, sbase)
    return instance


# --------------------------------------------------------------------------- messages

def _closest(word: str, options) -> str:
    match = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a bool", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping"}.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _message(error: jsonschema.ValidationError, instance_root: Any) -> list[tuple[tuple, str]]:
    """(key path, message) pairs for one validation error."""
    path = tuple(error.absolute_path)
    value, schema, kind = error.instance, error.schema, error.validator
    custom = schema.get("x-message") if isinstance(schema, dict) else None
    if kind in ("additionalProperties", "unevaluatedProperties"):
        allowed = allowed_keys(schema, value, "")
        unknown = [k for k in value if k not in allowed]
        if kind == "additionalProperties":
            patterns = schema.get("patternProperties", {})
            unknown = [k for k in unknown if not any(re.search(p, k) for p in patterns)]
        listing = ", ".join(sorted(allowed))
        return [(path + (k,), f"unknown key{_closest(k, allowed)}; valid keys here: {listing}")
                for k in unknown]
    if custom:
        return [(path, f"{custom} (got {_show(value)})")]
    if kind == "required":
        missing = [k for k in error.validator_value if not isinstance(value, dict) or k not in value]
        return [(path + (k,), "missing required key") for k in missing]
    if kind == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return [(path, f"expected {expected}, got {_type_name(value)} {_show(value)}")]
    if kind == "enum":
        options = ", ".join(map(str, error.validator_value))
        return [(path, f"{_show(value)} is not one of: {options}{_closest(value, error.validator_value)}")]
    if kind == "const":
        return [(path, f"must be {_show(error.validator_value)}, got {_show(value)}")]
    bounds = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    if kind in bounds:
        return [(path, f"must be {bounds[kind]} {error.validator_value}, got {_show(value)}")]
    if kind in ("minItems", "maxItems"):
        word = "at least" if kind == "minItems" else "at most"
        return [(path, f"expected a list of {word} {error.validator_value} items, got {len(value)}")]
    if kind in ("minLength", "maxLength"):
        return [(path, f"string length must be {'>=' if kind == 'minLength' else '<='} {error.validator_value}")]
    if kind == "pattern":
        return [(path, f"{_show(value)} must match the pattern {error.validator_value}")]
    if kind in ("anyOf", "oneOf") and error.context:
        # Report the alternative that got furthest (deepest path), else list the kinds accepted.
        best = jsonschema.exceptions.best_match(error.context)
        if best is not None and best.validator not in ("type",):
            return _message(best, instance_root)
        kinds = []
        for sub in error.validator_value:
            sub, _ = follow_refs(sub, "")
            desc = sub.get("x-kind") or sub.get("type") or ("one of " + ", ".join(map(str, sub["enum"]))
                                                            if "enum" in sub else None)
            if desc:
                kinds.append(" or ".join(desc) if isinstance(desc, list) else str(desc))
        return [(path, f"expected {' or '.join(kinds) or 'another kind of value'}, got {_type_name(value)} "
                       f"{_show(value)}")]
    return [(path, error.message)]


def validate(config: dict, locations: dict, default_location: tuple[str, int]) -> list[str]:
    """All problems in ``config``, each ``file:line: key.path: message``, sorted by file and line."""
    problems = []
    for error in validator().iter_errors(config):
        for path, message in _message(error, config):
            where = _locate(path, locations, default_location)
            dotted = ".".join(str(p) for p in path) or "(top level)"
            problems.append((where, dotted, message))
    problems.sort(key=lambda p: (p[0][0], p[0][1], p[1]))
    unique = list(dict.fromkeys(
        f"{f}:{line}: {dotted}: {msg}" if line else f"{f}: {dotted}: {msg}"
        for (f, line), dotted, msg in problems))
    return unique


def _locate(path: tuple, locations: dict, default: tuple[str, int]) -> tuple[str, int]:
    for end in range(len(path), -1, -1):
        if path[:end] in locations:
            return locations[path[:end]]
    return default
