"""The README is the front door: its commands and its config reference stay true."""

from pathlib import Path

from patchcfg.config.docs import (
    RECIPES_BEGIN,
    RECIPES_END,
    STRATEGIES_BEGIN,
    STRATEGIES_END,
    readme_section,
    recipe_markdown,
    schema_markdown,
    strategy_markdown,
)

README = Path(__file__).resolve().parents[1] / "README.md"


def test_first_lines_give_demo_and_test():
    head = "\n".join(README.read_text(encoding="utf-8").splitlines()[:6])
    assert "make demo" in head and "make test" in head


def test_config_reference_matches_the_schemas():
    section = readme_section(README.read_text(encoding="utf-8"))
    assert section == schema_markdown(), (
        "README's config reference is out of date: run `patchcfg schema --update-readme README.md`")


def test_recipe_reference_matches_the_registry():
    section = readme_section(README.read_text(encoding="utf-8"), RECIPES_BEGIN, RECIPES_END)
    assert section == recipe_markdown(), (
        "README's augmentation recipe reference is out of date: run `patchcfg schema --update-readme README.md`")


def test_strategy_reference_matches_the_registry():
    section = readme_section(README.read_text(encoding="utf-8"), STRATEGIES_BEGIN, STRATEGIES_END)
    assert section == strategy_markdown(), (
        "README's query strategy table is out of date: run `patchcfg schema --update-readme README.md`")
