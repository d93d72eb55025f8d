"""Method parameters come from the schema: built from its defaults, never re-defaulted in code."""

from __future__ import annotations

import ast
import copy
import dataclasses
from pathlib import Path

import pytest

from patchcfg.config.schema import fill_defaults
from patchcfg.pretrain import get_method, method_names
from patchcfg.pretrain.params import PretrainParams, build_params, resolved_section

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "patchcfg"
PRETRAIN = PACKAGE / "pretrain"
#: where a default written in code would hide: the methods and the stages that run them
SCANNED = (PRETRAIN, PACKAGE / "stages")


def schema_section(name: str) -> dict:
    return fill_defaults({"name": "x", "pretrain": {"method": name}})["pretrain"]


def field_paths(params, prefix=()):
    """Every (key path, value) of a params dataclass, nested sections included."""
    for field in dataclasses.fields(params):
        value = getattr(params, field.name)
        path = (*prefix, field.name)
        yield path, field, value
        if dataclasses.is_dataclass(value):
            yield from field_paths(value, path)


def lookup(section, path):
    for key in path:
        section = section[key]
    return section


@pytest.mark.parametrize("name", method_names())
def test_every_parameter_is_the_schema_default(name):
    """Built from the schema's defaults alone, each field holds the schema's value."""
    section = schema_section(name)
    params = build_params(get_method(name).Params, section)
    assert isinstance(params, PretrainParams) and params.method == name
    for path, _, value in field_paths(params):
        expected = lookup(section, path)
        if dataclasses.is_dataclass(value):
            assert dataclasses.asdict(value) == expected, path
        else:
            assert (list(value) if isinstance(value, tuple) else value) == expected, path


@pytest.mark.parametrize("name", method_names())
def test_no_parameter_has_a_fallback(name):
    """Take any key out of the resolved section and building fails, naming it: no field has a default
    of its own in code (the schema is the only place one is written)."""
    section = schema_section(name)
    cls = get_method(name).Params
    paths = [(path, field) for path, field, _ in field_paths(build_params(cls, section))]
    assert len(paths) >= 7
    for path, field in paths:
        assert field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING, path
        broken = copy.deepcopy(section)
        del lookup(broken, path[:-1])[path[-1]]
        with pytest.raises(ValueError, match=r"pretrain\." + r"\.".join(path) + " is missing"):
            build_params(cls, broken)


def test_optional_keys_without_a_default_read_as_none():
    tasks = build_params(get_method("multitask").Params,
                         resolved_section({"method": "multitask", "tasks": [{"labels": "a.csv"}]})).tasks
    assert tasks[0].labels == "a.csv" and tasks[0].name is None and tasks[0].weight == 1.0


def restated_defaults(path: Path) -> list[str]:
    """``x.get("key", default)`` calls: a default written in code."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("get", "setdefault", "pop") and len(node.args) == 2
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_pretrain_or_stage_module_restates_a_default():
    found = [line for folder in SCANNED for path in sorted(folder.rglob("*.py")) for line in restated_defaults(path)]
    assert not found, "defaults belong in the schemas (src/patchcfg/schemas/):\n" + "\n".join(found)


def test_the_scan_finds_a_restated_default(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f(params):\n    return params.get('temperature', 0.1), params.get('x')\n")
    assert restated_defaults(sample) == ["sample.py:2: params.get('temperature', 0.1)"]


def schema_keys() -> set[str]:
    """Every key name of the pretrain schema, nested sections and method branches included."""
    from patchcfg.config.schema import load_schemas

    names: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            names.update(node.get("properties", {}))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(load_schemas()["pretrain.schema.json"])
    return names


def defaulted_config_arguments(path: Path, keys: set[str]) -> list[str]:
    """Function arguments named like a config key with a default other than None (None: not given)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.Lambda):
            args = node.args
            positional = args.posonlyargs + args.args
            pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults, strict=True))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None]
            for arg, default in pairs:
                if arg.arg in keys and not (isinstance(default, ast.Constant) and default.value is None):
                    found.append(f"{path.name}:{node.lineno}: {arg.arg}={ast.unparse(default)}")
    return found


def test_no_pretrain_function_defaults_a_config_key():
    keys = schema_keys()
    assert {"temperature", "depth", "pca_dim", "mask_size", "scale"} <= keys
    paths = sorted(PRETRAIN.rglob("*.py"))
    found = [line for path in paths for line in defaulted_config_arguments(path, keys)]
    assert not found, "a config key's default belongs in schemas/pretrain.schema.json:\n" + "\n".join(found)


def test_the_argument_scan_finds_a_default(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f(z, temperature=0.1, *, dim=None, depth=2):\n    return z\n")
    assert defaulted_config_arguments(sample, {"temperature", "dim", "depth"}) == \
        ["sample.py:1: temperature=0.1", "sample.py:1: depth=2"]
