"""Resolved configs: extends, overrides, sweeps, defaults, and every kind of error with its line."""

import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchcfg.config import expand_sweeps, load_config
from patchcfg.errors import ConfigError


def write(folder, name, text):
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def errors_of(path, overrides=()):
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return info.value.problems


def test_defaults_are_filled_from_the_schema(tmp_path):
    config = load_config(write(tmp_path, "c.yaml", "name: x\npretrain: {method: simclr}\n"))
    assert config["seed"] == 42
    assert config["data"]["imshape"] == [32, 32]
    assert config["distribute"]["strategy"] == "auto"
    assert config["pretrain"]["temperature"] == pytest.approx(0.1)
    assert "finetune" not in config  # stages run only when declared


def test_method_specific_defaults(tmp_path):
    config = load_config(write(tmp_path, "c.yaml", "name: x\npretrain: {method: moco}\n"))
    assert config["pretrain"]["queue_size"] == 4096
    assert config["pretrain"]["momentum"] == pytest.approx(0.999)


def test_extends_merges_deeply_and_replaces_lists(tmp_path):
    write(tmp_path, "base.yaml", """
        name: base
        data: {imshape: [64, 64], channels: 1}
        pretrain: {method: simclr, epochs: 7}
    """)
    path = write(tmp_path, "child.yaml", """
        extends: base.yaml
        name: child
        data: {imshape: [16, 16]}
        pretrain: {temperature: 0.5}
    """)
    config = load_config(path)
    assert config["name"] == "child"
    assert config["data"]["imshape"] == [16, 16] and config["data"]["channels"] == 1
    assert config["pretrain"]["epochs"] == 7 and config["pretrain"]["temperature"] == 0.5
    assert "extends" not in config


def test_extends_list_and_cycle(tmp_path):
    write(tmp_path, "a.yaml", "name: a\nseed: 1\n")
    write(tmp_path, "b.yaml", "name: b\nseed: 2\ndata: {channels: 4}\n")
    config = load_config(write(tmp_path, "c.yaml", "extends: [a.yaml, b.yaml]\nname: c\n"))
    assert config["seed"] == 2 and config["data"]["channels"] == 4
    write(tmp_path, "x.yaml", "extends: y.yaml\nname: x\n")
    write(tmp_path, "y.yaml", "extends: x.yaml\nname: y\n")
    assert "cycle" in errors_of(tmp_path / "x.yaml")[0]
    assert "not found" in errors_of(write(tmp_path, "z.yaml", "extends: nope.yaml\nname: z\n"))[0]


def test_errors_in_a_base_file_point_at_the_base(tmp_path):
    write(tmp_path, "base.yaml", "name: base\ndata:\n  chanels: 3\n")
    problems = errors_of(write(tmp_path, "c.yaml", "extends: base.yaml\nname: c\n"))
    assert problems[0].startswith(f"{tmp_path / 'base.yaml'}:3: data.chanels: unknown key (did you mean 'channels'?)")


def test_overrides_parse_yaml_and_win(tmp_path):
    path = write(tmp_path, "c.yaml", "name: x\npretrain: {method: simclr, epochs: 3}\n")
    config = load_config(path, ["pretrain.epochs=5", "name=quick", "data.imshape=[16, 16]",
                                "pretrain.optimizer.lr=1e-4"])
    assert config["pretrain"]["epochs"] == 5 and config["name"] == "quick"
    assert config["data"]["imshape"] == [16, 16]
    assert config["pretrain"]["optimizer"]["lr"] == pytest.approx(1e-4)


def test_overrides_and_sweeps_reach_into_lists_the_defaults_create(tmp_path):
    """The README's ``finetune.stages.0.lr=1e-4`` on a config that states no stages."""
    path = write(tmp_path, "c.yaml", "name: x\nfinetune: {loss: masked_bce}\n")
    stages = load_config(path, ["finetune.stages.0.lr=1e-4"])["finetune"]["stages"]
    assert [s["lr"] for s in stages] == [1e-4, 1e-4] and stages[1]["unfreeze_encoder"] is True
    swept = expand_sweeps(path, [], ["finetune.stages.1.lr=0.1,0.2"])
    assert [c["finetune"]["stages"][1]["lr"] for c in swept] == [0.1, 0.2]
    assert "no list item 5" in " ".join(errors_of(path, ["finetune.stages.5.lr=1"]))


def test_unknown_override_key_is_refused_like_a_file_key(tmp_path):
    path = write(tmp_path, "c.yaml", "name: x\npretrain: {method: simclr}\n")
    problems = errors_of(path, ["pretrain.temprature=0.3"])
    assert problems == [
        problems[0]] and "override 'pretrain.temprature=0.3': pretrain.temprature: unknown key " \
        "(did you mean 'temperature'?)" in problems[0]


def test_malformed_override(tmp_path):
    path = write(tmp_path, "c.yaml", "name: x\n")
    assert "expected KEY=VALUE" in errors_of(path, ["=3"])[0]
    assert "is a value" in errors_of(path, ["name.x=3"])[0]


def test_every_error_is_reported_with_line_and_key_path(tmp_path):
    path = write(tmp_path, "x.yaml", """
        name: bad name
        seed: -1
        data:
          imshape: [32]
          on_bad_image: ignore
        pretrain:
          method: simclr
          temprature: 0.1
          epochs: many
        colour: red
    """)
    problems = errors_of(path)
    text = "\n".join(problems)
    assert f"{path}:1: name: must use only letters" in text
    assert f"{path}:2: seed: must be >= 0, got -1" in text
    assert f"{path}:4: data.imshape: expected a list of at least 2 items, got 1" in text
    assert f"{path}:5: data.on_bad_image: 'ignore' is not one of: error, skip" in text
    assert f"{path}:8: pretrain.temprature: unknown key (did you mean 'temperature'?)" in text
    assert f"{path}:9: pretrain.epochs: expected integer, got a string 'many'" in text
    assert f"{path}:10: colour: unknown key" in text
    lines = [int(p.split(":")[1]) for p in problems]
    assert lines == sorted(lines)


def test_enum_did_you_mean(tmp_path):
    problems = errors_of(write(tmp_path, "c.yaml", "name: x\npretrain: {method: simclrr}\n"))
    assert "did you mean 'simclr'?" in problems[0]


def test_method_specific_keys_are_checked(tmp_path):
    problems = errors_of(write(tmp_path, "c.yaml", "name: x\npretrain: {method: simclr, queue_size: 10}\n"))
    assert "pretrain.queue_size: unknown key" in problems[0]
    ok = load_config(write(tmp_path, "m.yaml", "name: x\npretrain: {method: moco, queue_size: 64}\n"))
    assert ok["pretrain"]["queue_size"] == 64


def test_missing_name_empty_and_top_level_list(tmp_path):
    assert "name: missing required key" in errors_of(write(tmp_path, "a.yaml", "seed: 1\n"))[0]
    assert "empty" in errors_of(write(tmp_path, "b.yaml", "# nothing\n"))[0]
    assert "must be a mapping" in errors_of(write(tmp_path, "c.yaml", "- a\n- b\n"))[0]


def test_sweeps_make_a_named_grid(tmp_path):
    path = write(tmp_path, "c.yaml", "name: s\npretrain: {method: simclr}\n")
    configs = expand_sweeps(path, ["pretrain.epochs=2"], ["pretrain.temperature=0.1,0.5", "seed=1,2"])
    names = [c["name"] for c in configs]
    assert names == ["s_temperature-0.1_seed-1", "s_temperature-0.1_seed-2",
                     "s_temperature-0.5_seed-1", "s_temperature-0.5_seed-2"]
    assert {c["pretrain"]["temperature"] for c in configs} == {0.1, 0.5}
    assert all(c["pretrain"]["epochs"] == 2 for c in configs)


def test_sweep_of_lists_and_bad_values(tmp_path):
    path = write(tmp_path, "c.yaml", "name: s\n")
    configs = expand_sweeps(path, [], ["data.imshape=[[16, 16], [32, 32]]"])
    assert [c["name"] for c in configs] == ["s_imshape-16-16", "s_imshape-32-32"]
    with pytest.raises(ConfigError, match="seed: must be >= 0"):
        expand_sweeps(path, [], ["seed=1,-1"])


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False),
                         st.text(max_size=8))
yaml_values = st.recursive(yaml_scalars, lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.text(min_size=1, max_size=8), children, max_size=3),
                           max_leaves=8)
sections = st.sampled_from(["name", "seed", "data", "backbone", "augmentation", "pretrain", "distribute",
                            "bogus", "imshape", "method"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(sections, yaml_values, max_size=5))
def test_generated_configs_never_raise_anything_but_config_error(tmp_path, data):
    import yaml

    path = tmp_path / "gen.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as error:
        assert all(p.startswith(str(path)) for p in error.problems)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_arbitrary_text_never_raises_anything_but_config_error(tmp_path, text):
    path = tmp_path / "gen.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except ConfigError:
        pass
