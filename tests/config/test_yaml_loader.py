"""YAML loading: line marks, duplicates, and inputs a config must never be."""

import time

import pytest

from patchcfg.config.yaml_loader import load_yaml_file, load_yaml_text
from patchcfg.errors import ConfigError


def test_locations_point_at_the_line_of_each_key():
    data, locations = load_yaml_text("name: x\npretrain:\n  epochs: 5\n  optimizer:\n    lr: 0.1\n", "c.yaml")
    assert data == {"name": "x", "pretrain": {"epochs": 5, "optimizer": {"lr": 0.1}}}
    assert locations[("pretrain", "epochs")] == ("c.yaml", 3)
    assert locations[("pretrain", "optimizer", "lr")] == ("c.yaml", 5)


def test_list_items_have_locations():
    _, locations = load_yaml_text("stages:\n  - {epochs: 1}\n  - epochs: 2\n", "c.yaml")
    assert locations[("stages", 1, "epochs")] == ("c.yaml", 3)


def test_scientific_notation_without_dot_is_a_float():
    data, _ = load_yaml_text("lr: 1e-3\nwd: 5E+2\nname: 1e3x\n", "c.yaml")
    assert data == {"lr": 0.001, "wd": 500.0, "name": "1e3x"}


def test_duplicate_key_names_both_lines():
    with pytest.raises(ConfigError) as info:
        load_yaml_text("name: a\nseed: 1\nseed: 2\n", "c.yaml")
    assert "c.yaml:3: seed: duplicate key (first set on line 2)" in str(info.value)


def test_duplicate_nested_key():
    with pytest.raises(ConfigError, match=r"c.yaml:4: pretrain.epochs: duplicate key"):
        load_yaml_text("name: a\npretrain:\n  epochs: 1\n  epochs: 2\n", "c.yaml")


def test_tab_indentation_is_explained():
    with pytest.raises(ConfigError, match=r"c.yaml:3: .*tab.*spaces"):
        load_yaml_text("name: a\npretrain:\n\tepochs: 1\n", "c.yaml")


def test_syntax_error_has_a_line():
    with pytest.raises(ConfigError, match=r"c.yaml:3: YAML syntax error.*starts on line 2"):
        load_yaml_text("name: a\nb: [1, 2\nc: 3\n", "c.yaml")


def test_python_tags_are_refused():
    with pytest.raises(ConfigError, match="tags like !!python are refused"):
        load_yaml_text("name: !!python/object/apply:os.system ['echo hi']\n", "c.yaml")


def test_billion_laughs_is_stopped_quickly():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 10):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        bomb += f"{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
    start = time.monotonic()
    with pytest.raises(ConfigError, match="expands to more than"):
        load_yaml_text(bomb, "bomb.yaml")
    assert time.monotonic() - start < 5


def test_recursive_alias_is_refused():
    with pytest.raises(ConfigError):
        load_yaml_text("a: &a\n  b: *a\n", "c.yaml")


def test_modest_aliases_and_merge_keys_work():
    data, _ = load_yaml_text("base: &b {lr: 0.1, epochs: 2}\nstage: {<<: *b, epochs: 3}\n", "c.yaml")
    assert data["stage"] == {"lr": 0.1, "epochs": 3}


@pytest.mark.parametrize("content, message", [
    (b"", None),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
    (b"name: caf\xe9\n", "not UTF-8"),
])
def test_bad_files(tmp_path, content, message):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    if message is None:
        assert load_yaml_file(path) == (None, {})
    else:
        with pytest.raises(ConfigError, match=message) as info:
            load_yaml_file(path)
        assert str(path) in str(info.value)


def test_huge_file_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "big.yaml"
    with open(path, "wb") as handle:
        handle.truncate(50 * 1024 * 1024)
    start = time.monotonic()
    with pytest.raises(ConfigError, match="too large for a config"):
        load_yaml_file(path)
    assert time.monotonic() - start < 2


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_yaml_file(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a folder"):
        load_yaml_file(tmp_path)
