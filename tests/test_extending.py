"""Extending patchcfg from outside the package: a pretraining method, a query strategy, an
augmentation op and a stage, each written in a module of its own, show up wherever a user sees one
(the config schema, the command line, ``patchcfg run``, the listings); a name registered twice is an
error that says where both registrations stand."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

pytest.importorskip("tensorflow")

from patchcfg import pretrain, stages  # noqa: E402
from patchcfg.active import rank  # noqa: E402
from patchcfg.active import strategies as strategy_registry  # noqa: E402
from patchcfg.cli import main  # noqa: E402
from patchcfg.config import load_config, resolve_config  # noqa: E402
from patchcfg.config import schema as config_schema  # noqa: E402
from patchcfg.data import ops  # noqa: E402
from patchcfg.errors import ConfigError, UserError  # noqa: E402
from patchcfg.registries import DuplicateName  # noqa: E402

PLUGIN = '''
"""A plugin: one of each extension, registered as it is imported."""

from dataclasses import dataclass

import numpy as np

from patchcfg.active.strategies import Strategy
from patchcfg.active.strategies import register as register_strategy
from patchcfg.data.ops import PROB, Param
from patchcfg.data.ops import register as register_op
from patchcfg.pretrain import register as register_method
from patchcfg.pretrain.params import PretrainParams
from patchcfg.pretrain.two_view import TwoViewMethod
from patchcfg.stages import register as register_stage
from patchcfg.stages.runner import Stage


@register_method("pull_together")
class PullTogether(TwoViewMethod):
    summary = "the two views' embeddings pulled together, nothing pushed apart."
    config_keys = {"pull_weight": {"description": "Weight of the pull.", "type": "number", "minimum": 0,
                                   "default": 0.5}}

    @dataclass(frozen=True)
    class Params(PretrainParams):
        pull_weight: float

    def pair_loss(self, z1, z2, *, z1_all, z2_all, offset):
        import tensorflow as tf

        return self.params.pull_weight * tf.reduce_sum(tf.square(z1 - z2), axis=1), {}


@register_strategy
class LastFirst(Strategy):
    name = "last_first"
    needs = ()
    ranks_first = "the last rows of the table"

    def score(self, query, rng):
        return query.rows.astype(float)


@register_op("invert", "patchwork", "With this probability, invert every value (1 - x).",
             {"p": Param(PROB, 0.5, "Probability.")}, primary="p", off_at_zero="p")
def invert(params):
    def run(images, seeds):
        return 1.0 - images
    return run


@register_stage
class GreetStage(Stage):
    name = "greet"
    run_order = 5
    distributed = False
    schema = {"type": "object", "additionalProperties": False, "default": {},
              "properties": {"greeting": {"description": "What to say.", "type": "string", "default": "hello"}}}
    section_help = "A greeting (`patchcfg greet`)."
    command_help = "Say hello in the experiment folder."
    command_doc = """Write the greeting into experiments/<name>/greet/summary.json.

    \\b
    Example:
      patchcfg greet configs/demo.yaml
    """

    def execute(self):
        return {"greeting": self.params["greeting"]}
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """The plugin module, imported from a folder of its own; its registrations undone afterwards."""
    (tmp_path / "plugin_one_of_each.py").write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("plugin_one_of_each")
    yield module
    pretrain.unregister("pull_together")
    strategy_registry.unregister("last_first")
    ops.unregister("invert")
    stages.unregister("greet")
    sys.modules.pop("plugin_one_of_each", None)


def test_a_method_registered_outside_is_in_the_config_schema(plugin):
    config = resolve_config({"name": "x", "pretrain": {"method": "pull_together"}})
    assert config["pretrain"]["pull_weight"] == 0.5  # its default, stated in its own file
    method = config_schema.load_schemas()["pretrain.schema.json"]["properties"]["method"]
    assert "pull_together" in method["enum"] and "pull_together: the two views'" in method["description"]
    params = pretrain.get_method("pull_together").Params
    from patchcfg.pretrain.params import build_params

    assert build_params(params, config["pretrain"]).pull_weight == 0.5
    with pytest.raises(ConfigError, match="did you mean 'pull_together'"):
        resolve_config({"name": "x", "pretrain": {"method": "pull_togeter"}})
    with pytest.raises(ConfigError, match="pull_weight: unknown key"):
        resolve_config({"name": "x", "pretrain": {"method": "simclr", "pull_weight": 1.0}})
    with pytest.raises(ConfigError, match="must be >= 0"):
        resolve_config({"name": "x", "pretrain": {"method": "pull_together", "pull_weight": -1}})


def test_a_strategy_registered_outside_is_listed_and_ranks(plugin):
    assert "last_first" in strategy_registry.strategy_listing()  # the labelling page's list
    assert "last_first" in strategy_registry.cli_help()
    assert "last_first" in " ".join(CliRunner().invoke(main, ["query", "--help"]).output.split())
    picks = rank("last_first", probabilities=None, features=None, classes=["a"], candidates=np.ones(5, bool), n=2)
    assert picks["row"].tolist() == [4, 3]
    assert resolve_config({"name": "x", "query": {"strategy": "last_first"}})["query"]["strategy"] == "last_first"


def test_an_op_registered_outside_is_listed_and_in_the_schema(plugin):
    from patchcfg.config.docs import augmentation_schema_text as schema_text
    from patchcfg.data.recipes import expand_recipe

    assert ops.OPS["invert"].doc.startswith("With this probability")
    assert "invert" in list(ops.OPS) and '"invert"' in schema_text()
    assert resolve_config({"name": "x", "augmentation": {"invert": 0.3}})["augmentation"]["invert"] == 0.3
    assert any(step[0] == "invert" for step in expand_recipe({"invert": 0.3}))


def test_a_stage_registered_outside_has_its_verb_its_section_and_its_place_in_run(plugin, tmp_path):
    assert stages.pipeline() == ("pretrain", "finetune", "query", "distill", "greet")
    assert "greet" in stages.stage_names() and "greet" in stages.result_folders()
    runner = CliRunner()
    listing = runner.invoke(main, ["--help"]).output
    assert "greet     Say hello in the experiment folder." in listing
    assert "Example" in runner.invoke(main, ["greet", "--help"]).output
    config = tmp_path / "greet.yaml"
    config.write_text(yaml.safe_dump({"name": "hi", "greet": {"greeting": "hello there"}}), encoding="utf-8")
    assert load_config(config)["greet"] == {"greeting": "hello there"}
    result = runner.invoke(main, ["run", str(config), "--experiments", str(tmp_path / "exp")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "exp" / "hi" / "greet" / "summary.json").read_text())
    assert summary["greeting"] == "hello there"
    result = runner.invoke(main, ["greet", str(config), "--experiments", str(tmp_path / "exp")])
    assert result.exit_code == 0 and "already complete" in result.output


def test_unregistered_entries_leave_every_listing(plugin):
    pretrain.unregister("pull_together")
    strategy_registry.unregister("last_first")
    stages.unregister("greet")
    assert "pull_together" not in pretrain.method_names()
    assert "last_first" not in strategy_registry.strategy_listing()
    assert "greet" not in stages.pipeline() and "greet" not in CliRunner().invoke(main, ["--help"]).output
    with pytest.raises(ConfigError, match="pull_together"):
        resolve_config({"name": "x", "pretrain": {"method": "pull_together"}})


def test_a_name_registered_twice_names_both_places(tmp_path, monkeypatch):
    (tmp_path / "plugin_twice.py").write_text(textwrap.dedent('''
        from patchcfg.active.strategies import Strategy, register


        @register
        class Entropy(Strategy):
            name = "entropy"
        '''), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(DuplicateName) as info:
        importlib.import_module("plugin_twice")
    message = str(info.value)
    assert "strategy 'entropy' is registered twice" in message
    assert "patchcfg.active.strategies.entropy (" in message and "entropy.py:" in message
    assert f"plugin_twice ({tmp_path / 'plugin_twice.py'}:5)" in message
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)
    sys.modules.pop("plugin_twice", None)


def test_a_builtin_method_name_taken_from_outside_is_refused_before_its_module_is_imported():
    class Impostor:
        pass

    with pytest.raises(DuplicateName) as info:
        pretrain.register("moco")(Impostor)
    first, _, again = str(info.value).partition(", again in ")
    assert first.startswith("pretraining method 'moco' is registered twice: first in patchcfg.pretrain.moco (")
    assert f"{__file__}:" in again and __name__ in again
    assert pretrain.get_method("moco").__name__ == "MoCo"
