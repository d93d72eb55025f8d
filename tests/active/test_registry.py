"""The strategy registry: the schema, the CLI help and the docs follow it; a strategy written
outside the package (as the Extending page, docs/extending.md, shows) ranks end to end."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from patchcfg.active import parse_strategy, rank
from patchcfg.active import scores as S
from patchcfg.active.strategies import (
    Strategy,
    cli_help,
    feature_users,
    probability_users,
    register,
    registered,
    strategy_listing,
    unregister,
)
from patchcfg.config import docs
from patchcfg.config.schema import schema_dir
from patchcfg.errors import UserError

DOCS = Path(__file__).resolve().parents[2] / "docs"
EXTENDING = DOCS / "extending.md"
BUILTIN = ("auto", "random", "entropy", "margin", "least_confidence", "badge", "diversity", "typiclust", "probcover",
           "mistakes", "maxent:<class>", "high:<class>", "low:<class>", "guide:<class>")


@pytest.fixture
def mean_entropy():
    """The Extending page's example strategy, registered from its text."""
    module, test = docs.page_examples(EXTENDING.read_text(encoding="utf-8"), "### A query strategy")
    namespace = {}
    exec(compile(module, "mean_entropy.py", "exec"), namespace)
    yield namespace["MeanEntropy"], test
    unregister("mean_entropy")


def test_builtin_listing():
    assert strategy_listing() == BUILTIN
    assert feature_users() == (
        "auto", "badge", "diversity", "typiclust", "probcover", "mistakes", "guide")
    # a query scores every candidate for these; for the others only the picks, for the queue's p_ columns
    assert probability_users() == ("auto", "entropy", "margin", "least_confidence", "badge", "maxent", "high",
                                   "low", "guide")


def test_schema_file_matches_the_registry():
    text = (schema_dir() / "query.schema.json").read_text(encoding="utf-8")
    assert text == docs.query_schema_text(), "regenerate: patchcfg schema --update-schemas"
    prop = json.loads(text)["properties"]["strategy"]
    pattern = re.compile(prop["pattern"])
    assert prop["default"] == "auto"
    for shown in strategy_listing():
        assert pattern.match(shown.replace("<class>", "cat")), shown
    for bad in ("entropyy", "high", "maxent:", "random:cat", ""):
        assert not pattern.match(bad), bad


def test_help_and_the_strategy_table_name_every_strategy():
    table = (DOCS / "active-learning.md").read_text(encoding="utf-8")
    for strategy in registered():
        assert strategy.shown.replace("<class>", "CLASS") in cli_help()
        assert f"`{strategy.shown.replace('<class>', '<c>')}`" in table, (
            f"{strategy.shown} is missing from docs/active-learning.md: run `patchcfg schema --update-docs`")
    from patchcfg.cli import main

    result = CliRunner().invoke(main, ["query", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "guide:CLASS" in " ".join(result.output.split()) and "least_confidence" in result.output


def test_a_strategy_registered_outside_the_package_works_end_to_end(mean_entropy):
    _, page_test = mean_entropy
    namespace = {}
    exec(compile(page_test, "test_mean_entropy.py", "exec"), namespace)
    namespace["test_mean_entropy_ranks_rows_uncertain_about_every_class_first"]()
    p = np.array([[0.5, 0.99], [0.6, 0.6], [0.9, 0.1], [0.5, 0.5], [0.01, 0.99]])
    assert parse_strategy("mean_entropy", ["cat", "dog"]) == ("mean_entropy", None)
    picks = rank("mean_entropy", probabilities=p, features=None, classes=["cat", "dog"],
                 candidates=np.ones(5, bool), n=3)
    assert picks["row"].tolist() == [3, 1, 0]  # both classes at 0.5, both at 0.6, one class at 0.5
    np.testing.assert_allclose(picks["score"], S.binary_entropy(p[[3, 1, 0]]).mean(axis=1))
    assert set(picks["picked_by"]) == {"mean_entropy"}
    with pytest.raises(UserError, match="needs probabilities"):
        rank("mean_entropy", probabilities=None, features=None, classes=["cat", "dog"],
             candidates=np.ones(5, bool), n=3)
    with pytest.raises(UserError, match="takes no class"):
        parse_strategy("mean_entropy:cat", ["cat", "dog"])

    assert "mean_entropy" in strategy_listing() and "mean_entropy" in cli_help()
    prop = json.loads(docs.query_schema_text())["properties"]["strategy"]
    assert re.match(prop["pattern"], "mean_entropy") and "mean_entropy (rows uncertain" in prop["description"]
    assert "| `mean_entropy` | rows uncertain about many classes at once |" in docs.strategy_markdown()


def test_unregistering_restores_the_builtin_listing(mean_entropy):
    unregister("mean_entropy")
    assert strategy_listing() == BUILTIN
    assert docs.query_schema_text() == (schema_dir() / "query.schema.json").read_text(encoding="utf-8")
    register(mean_entropy[0])  # for the fixture's teardown


def test_a_name_is_registered_once_and_has_no_colon():
    class Twice(Strategy):
        name = "entropy"

    class Colon(Strategy):
        name = "a:b"

    with pytest.raises(ValueError, match="registered twice"):
        register(Twice)
    with pytest.raises(ValueError, match="without ':'"):
        register(Colon)
