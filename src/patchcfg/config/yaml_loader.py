"""YAML loading that keeps where every key came from, and refuses what a config must never be.

PyYAML's ``safe_load`` silently keeps the last of two duplicate keys, expands aliases without
limit ("billion laughs") and reads ``1e-3`` as a string. This loader composes the node graph
itself, so each key path maps to ``(file, line)``, duplicates are errors, alias expansion is
bounded and scientific notation without a dot is a float.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from patchcfg.errors import ConfigError

MAX_CONFIG_BYTES = 1_000_000
MAX_NODES = 100_000

_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in
               ("str", "int", "float", "bool", "null", "seq", "map", "timestamp")}

Location = tuple[str, int]  # (file, 1-based line)
KeyPath = tuple  # of str keys and int list indices


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` and ``5E+2`` as floats (YAML 1.2 behaviour)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _decode(data: bytes, where: str) -> str:
    if b"\x00" in data[:8192]:
        raise ConfigError(f"{where}: this is a binary file, not a YAML config")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConfigError(
            f"{where}:{line}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); "
            "save the file as UTF-8") from None


def _syntax_message(error: yaml.YAMLError, text: str) -> tuple[int, str]:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    line = mark.line + 1 if mark is not None else 1
    problem = getattr(error, "problem", None) or str(error)
    if mark is not None and "\t" in problem or "'\\t'" in str(problem):
        return line, "a tab character; YAML indentation must use spaces"
    context = getattr(error, "context", None)
    context_mark = getattr(error, "context_mark", None)
    if context and context_mark is not None and context_mark.line + 1 != line:
        context = f"{context} that starts on line {context_mark.line + 1}"
    message = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
    return line, message


class _Builder:
    """Turns a composed node graph into plain Python objects plus a key-path -> location map."""

    def __init__(self, where: str, text: str):
        self.where = where
        self.loader = _Loader(text)
        self.locations: dict[KeyPath, Location] = {}
        self.nodes = 0
        self.active: set[int] = set()

    def build(self, node: yaml.Node, path: KeyPath = ()) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ConfigError(
                f"{self.where}:{node.start_mark.line + 1}: the config expands to more than "
                f"{MAX_NODES:,} values (aliases repeated too often?); a config should be small")
        self.locations.setdefault(path, (self.where, node.start_mark.line + 1))
        if id(node) in self.active:
            raise ConfigError(f"{self.where}:{node.start_mark.line + 1}: an alias refers to itself")
        if node.tag not in _PLAIN_TAGS:
            raise ConfigError(
                f"{self.where}:{node.start_mark.line + 1}: {_dotted(path) or 'value'}: the tag {node.tag} "
                "is refused (configs hold plain values; tags like !!python are refused)")
        if node.tag == "tag:yaml.org,2002:timestamp":
            return node.value  # dates stay text: a config is JSON-like
        if isinstance(node, yaml.ScalarNode):
            try:
                return self.loader.construct_object(node, deep=True)
            except yaml.constructor.ConstructorError as error:
                raise ConfigError(
                    f"{self.where}:{node.start_mark.line + 1}: {_dotted(path) or 'value'}: "
                    f"{error.problem} (configs hold plain values; tags like !!python are refused)") from None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
        finally:
            self.active.discard(id(node))
        raise ConfigError(f"{self.where}:{node.start_mark.line + 1}: unsupported YAML node")  # pragma: no cover

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict:
        result: dict = {}
        seen: dict[Any, int] = {}
        merged: dict = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    value = self.build(source, path)
                    if not isinstance(value, dict):
                        raise ConfigError(f"{self.where}:{line}: '<<' merges mappings only")
                    merged.update({k: v for k, v in value.items() if k not in merged})
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(f"{self.where}:{line}: {_dotted(path) or 'top level'}: keys must be plain names")
            key = self.loader.construct_object(key_node)
            if not isinstance(key, str):
                key = str(key) if isinstance(key, (int, float, bool)) or key is None else key
            if key in seen:
                raise ConfigError(
                    f"{self.where}:{line}: {_dotted(path + (key,))}: duplicate key (first set on line "
                    f"{seen[key]}); YAML would silently keep only the last one — remove one")
            seen[key] = line
            self.locations[path + (key,)] = (self.where, line)
            result[key] = self.build(value_node, path + (key,))
        for key, value in merged.items():
            result.setdefault(key, value)
        return result


def _dotted(path: KeyPath) -> str:
    return ".".join(str(p) for p in path)


def load_yaml_text(text: str, where: str) -> tuple[Any, dict[KeyPath, Location]]:
    """Parse YAML ``text``; return the value and where each key path was written."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as error:
        line, message = _syntax_message(error, text)
        raise ConfigError(f"{where}:{line}: {message}") from None
    if node is None:
        return None, {}
    builder = _Builder(where, text)
    return builder.build(node), builder.locations


def load_yaml_file(path: str | Path) -> tuple[Any, dict[KeyPath, Location]]:
    """Read a config file safely: size-limited, UTF-8, no binary, with line marks."""
    path = Path(path)
    where = str(path)
    if not path.exists():
        raise ConfigError(f"{where}: config file not found")
    if path.is_dir():
        raise ConfigError(f"{where}: is a folder; give a YAML config file")
    if not path.is_file():  # a device (/dev/zero), a FIFO, a socket: their size says nothing
        raise ConfigError(f"{where}: not a regular file (a device, pipe or socket); give a YAML config file")
    try:
        with open(path, "rb") as handle:  # read with a cap: what stat says may not be what is there
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise ConfigError(
            f"{where}: cannot read ({error.strerror}); check the path and its permissions") from None
    if len(data) > MAX_CONFIG_BYTES:
        size = max(path.stat().st_size, len(data))
        raise ConfigError(
            f"{where}: {size / 1e6:.1f} MB is too large for a config (limit {MAX_CONFIG_BYTES / 1e6:.0f} MB); "
            "is this the right file?")
    return load_yaml_text(_decode(data, where), where)
