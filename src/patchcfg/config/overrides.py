"""Command-line overrides (``key.sub=value``) and sweeps (``--sweep key=v1,v2``)."""

from __future__ import annotations

import itertools
import re
from typing import Any

from patchcfg.config.yaml_loader import load_yaml_text
from patchcfg.errors import ConfigError

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")


def parse_assignment(text: str, what: str = "override") -> tuple[tuple, Any, str]:
    """``a.b.0.c=value`` -> (("a", "b", 0, "c"), parsed value, source label)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not _KEY.match(key):
        raise ConfigError(
            f"{what} '{text}': expected KEY=VALUE with a dotted key, e.g. pretrain.epochs=5")
    source = f"{what} '{text}'"
    value, _ = load_yaml_text(raw, source) if raw.strip() else (None, {})
    path = tuple(int(p) if p.isdigit() else p for p in key.split("."))
    return path, value, source


def set_path(config: dict, path: tuple, value: Any, source: str) -> None:
    """Set ``value`` at ``path``, creating mappings on the way; lists are indexed by number."""
    node = config
    for depth, part in enumerate(path[:-1]):
        prefix = ".".join(map(str, path[: depth + 1]))
        if isinstance(node, list):
            if not isinstance(part, int) or not -len(node) <= part < len(node):
                raise ConfigError(f"{source}: {prefix}: no list item {part} (the list has {len(node)})")
            node = node[part]
            continue
        if part not in node or node[part] is None:
            node[part] = {}
        elif not isinstance(node[part], (dict, list)):
            raise ConfigError(f"{source}: {prefix} is a value ({node[part]!r}), not a mapping")
        node = node[part]
    last = path[-1]
    if isinstance(node, list):
        if not isinstance(last, int) or not -len(node) <= last < len(node):
            raise ConfigError(f"{source}: no list item {last} (the list has {len(node)})")
    node[last] = value


def _default_lists(config: dict, path: tuple) -> None:
    """Give ``config`` the lists that its defaults would create on the way to ``path`` (so that
    ``finetune.stages.0.lr=1e-4`` reaches the default stages of a config that states none)."""
    import copy

    from patchcfg.config.schema import fill_defaults

    for depth in range(1, len(path)):
        if not isinstance(path[depth], int):
            continue
        node, resolved = config, None
        for part in path[:depth - 1]:
            node = node.get(part) if isinstance(node, dict) else None
        key = path[depth - 1]
        if not isinstance(node, dict) or node.get(key) is not None:
            continue
        resolved = fill_defaults(copy.deepcopy(config))
        for part in path[:depth]:
            resolved = resolved.get(part) if isinstance(resolved, dict) else None
        if isinstance(resolved, list):
            node[key] = resolved


def apply_overrides(config: dict, locations: dict, overrides) -> None:
    """Set each ``key.sub=value`` in the raw config; lists the defaults would create are created
    first, so an override can address their items."""
    for text in overrides:
        path, value, source = parse_assignment(text)
        _default_lists(config, path)
        set_path(config, path, value, source)
        for key in [k for k in locations if k[: len(path)] == path]:
            del locations[key]
        for depth in range(1, len(path) + 1):
            locations.setdefault(path[:depth], (source, 0))
        locations[path] = (source, 0)


def parse_sweep(text: str) -> tuple[str, list[Any]]:
    """``key=v1,v2`` or ``key=[v1, v2]`` (a YAML list, for values that hold commas)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not _KEY.match(key) or not raw.strip():
        raise ConfigError(f"--sweep '{text}': expected KEY=V1,V2,... e.g. --sweep pretrain.temperature=0.1,0.2")
    raw = raw.strip()
    if raw.startswith("["):
        values, _ = load_yaml_text(raw, f"--sweep '{text}'")
    else:
        values = [load_yaml_text(part, f"--sweep '{text}'")[0] for part in raw.split(",")]
    if not isinstance(values, list) or not values:
        raise ConfigError(f"--sweep '{text}': no values to sweep")
    return key, values


def _format_value(value: Any) -> str:
    text = "-".join(map(str, value)) if isinstance(value, list) else str(value)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "null"


def sweep_combinations(sweeps) -> list[tuple[list[str], str]]:
    """Every combination of the sweeps: (override texts, name suffix). No sweep -> one empty combination."""
    parsed = [parse_sweep(s) for s in sweeps]
    keys = [k for k, _ in parsed]
    last = [k.split(".")[-1] for k in keys]
    labels = [short if last.count(short) == 1 else key for key, short in zip(keys, last, strict=True)]
    combos = []
    for values in itertools.product(*[v for _, v in parsed]):
        overrides = [f"{k}={_yaml_inline(v)}" for k, v in zip(keys, values, strict=True)]
        suffix = "_".join(f"{label}-{_format_value(v)}" for label, v in zip(labels, values, strict=True))
        combos.append((overrides, suffix))
    return combos


def _yaml_inline(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
