"""Configs: YAML with line marks, ``extends``, overrides, sweeps, schema validation and defaults.

Nothing here imports TensorFlow: a config is checked completely before anything heavy runs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from patchcfg.config.checks import backbone_problems, loss_problems, output_problems
from patchcfg.config.overrides import apply_overrides, sweep_combinations
from patchcfg.config.schema import fill_defaults, load_schemas, validate
from patchcfg.config.yaml_loader import load_yaml_file
from patchcfg.errors import ConfigError

__all__ = ["load_config", "expand_sweeps", "load_raw", "deep_merge", "flatten", "with_defaults", "schema_defaults",
           "resolve_config"]


def deep_merge(base: dict, top: dict) -> dict:
    """``top`` over ``base``: mappings merge key by key, anything else (lists included) is replaced."""
    merged = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _read_mapping(path: Path) -> tuple[dict, dict]:
    data, locations = load_yaml_file(path)
    if data is None:
        raise ConfigError(f"{path}: the config is empty; it needs at least `name: <experiment name>`")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the config must be a mapping of keys to values, not {type(data).__name__}")
    return data, locations


def load_raw(path: str | Path, _chain: tuple = ()) -> tuple[dict, dict]:
    """The config as written, with ``extends`` merged in: (mapping, key path -> (file, line))."""
    path = Path(path)
    data, locations = _read_mapping(path)
    bases = data.pop("extends", None)
    if bases is None:
        return data, locations
    where = locations.get(("extends",), (str(path), 1))
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{where[0]}:{where[1]}: extends: expected a file name or a list of file names")
    merged, merged_locations = {}, {}
    for base in bases:
        base_path = (path.parent / base)
        if base_path.resolve() in _chain or base_path.resolve() == path.resolve():
            raise ConfigError(f"{where[0]}:{where[1]}: extends: '{base}' extends itself (a cycle)")
        if not base_path.is_file():
            raise ConfigError(f"{where[0]}:{where[1]}: extends: '{base}' not found (looked for {base_path})")
        base_data, base_locations = load_raw(base_path, _chain + (path.resolve(),))
        merged = deep_merge(merged, base_data)
        merged_locations.update(base_locations)
    merged_locations.update({k: v for k, v in locations.items() if k[:1] != ("extends",)})
    return deep_merge(merged, data), merged_locations


def resolve(raw: dict, locations: dict, default_location: tuple[str, int]) -> dict:
    """Fill defaults from the schemas and validate; every problem is reported at once."""
    config = fill_defaults(copy.deepcopy(raw))
    problems = validate(config, locations, default_location)
    if not problems:  # the loss grammar and registry, as the run will use them
        problems = loss_problems(config, locations, default_location)
        problems += output_problems(config, locations, default_location)
        problems += backbone_problems(config, locations, default_location)
    if problems:
        raise ConfigError(problems)
    return config


def flatten(config: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten a nested config to dotted keys.

    Mappings nest with dots, lists holding mappings are indexed (``finetune.stages.0.lr``), other
    lists, empty mappings, bools and nulls are kept as values.

    >>> flatten({"a": {"b": True, "c": None}, "s": [{"lr": 0.1}], "shape": [32, 32]})
    {'a.b': True, 'a.c': None, 's.0.lr': 0.1, 'shape': [32, 32]}
    """
    out: dict[str, Any] = {}

    def into(value: Any, key: str) -> None:
        if isinstance(value, Mapping) and value:
            for sub, item in value.items():
                into(item, f"{key}.{sub}")
        elif isinstance(value, list) and any(isinstance(item, Mapping) for item in value):
            for index, item in enumerate(value):
                into(item, f"{key}.{index}")
        else:
            out[key] = value

    for key, value in config.items():
        into(value, str(key))
    return out


def with_defaults(section: str, partial: dict) -> dict:
    """Config section ``section`` as a resolved config holds it: ``partial`` with the schemas'
    defaults filled in (not validated). For code and tests that build one section by hand."""
    return fill_defaults({section: copy.deepcopy(partial)})[section]


def schema_defaults(schema_id: str, partial: dict) -> dict:
    """``partial`` with the defaults of the schema file ``schema_id`` filled in (not validated):
    for a value of a shared schema (``optimizer.schema.json``) wherever it comes from."""
    return fill_defaults(copy.deepcopy(partial), load_schemas()[schema_id], schema_id)


def resolve_config(config: dict, source: str = "(config)") -> dict:
    """A config built in Python, resolved as a file would be: a copy with the defaults filled in,
    validated (:class:`ConfigError` naming each key path). A resolved config comes back unchanged."""
    return resolve(config, {}, (source, 0))


def load_config(path: str | Path, overrides=(), sections=()) -> dict:
    """The resolved config: file (with what it extends) < overrides, defaults filled, validated.

    ``sections``: sections a command needs whether or not the file declares them (``query`` for
    ``patchcfg query``); one the file lacks is added with its defaults.
    """
    raw, locations = load_raw(path)
    apply_overrides(raw, locations, overrides)
    for section in sections:
        if raw.get(section) is None:
            raw[section] = {}
    return resolve(raw, locations, (str(path), 1))


def expand_sweeps(path: str | Path, overrides=(), sweeps=()) -> list[dict]:
    """One resolved config per sweep combination, each named ``<name>_<key>-<value>...``.

    All combinations are validated before any runs; their problems are reported together.
    """
    configs, problems = [], []
    for sweep_overrides, suffix in sweep_combinations(sweeps):
        try:
            config = load_config(path, list(overrides) + sweep_overrides)
        except ConfigError as error:
            problems.extend(p for p in error.problems if p not in problems)
            continue
        if suffix:
            config["name"] = f"{config['name']}_{suffix}"
        configs.append(config)
    if problems:
        raise ConfigError(problems)
    return configs
