"""Generated text: the schema files written from the registries and the generated blocks of the
docs pages, kept in step by tests, rewritten on demand (``patchcfg schema --update-schemas
--update-docs``)."""

from pathlib import Path

from patchcfg.config import docs
from patchcfg.config.schema import schema_dir


def test_generated_schema_files_are_up_to_date():
    for name, text in docs.generated_schemas().items():
        assert (schema_dir() / name).read_text(encoding="utf-8") == text, (
            f"schemas/{name} is out of date: run `patchcfg schema --update-schemas`")


def test_update_schemas_rewrites_only_what_is_stale(tmp_path):
    for path in schema_dir().glob("*.schema.json"):
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    assert docs.update_schemas(tmp_path) == []
    (tmp_path / "augmentation.schema.json").write_text("{}\n", encoding="utf-8")
    query = tmp_path / "query.schema.json"
    stale = query.read_text(encoding="utf-8").replace('"pattern": "^(auto|', '"pattern": "^(aut|')
    query.write_text(stale, encoding="utf-8")
    assert docs.update_schemas(tmp_path) == ["augmentation.schema.json", "query.schema.json"]
    for name, text in docs.generated_schemas(tmp_path).items():
        assert (tmp_path / name).read_text(encoding="utf-8") == text


# --------------------------------------------------------------------------- the docs pages' generated blocks

DOCS = Path(__file__).resolve().parents[2] / "docs"


def copy_docs(target: Path) -> Path:
    for page in docs.docs_pages(DOCS):
        out = target / page.relative_to(DOCS)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page.read_text(encoding="utf-8"), encoding="utf-8")
    return target


def invoke(*args):
    from click.testing import CliRunner

    from patchcfg.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_update_docs_rewrites_only_the_stale_block_and_leaves_the_text_around_it(tmp_path):
    pages = copy_docs(tmp_path / "docs")
    assert docs.update_docs(pages) == ([], [])
    page = pages / "reference" / "config.md"
    good = page.read_text(encoding="utf-8")
    stale = good.replace("| `seed` | integer | `42` |", "| `seed` | integer | `7` |")
    page.write_text(stale + "\nA line written by hand after the block.\n", encoding="utf-8")
    assert docs.update_docs(pages) == ([page], [])
    assert page.read_text(encoding="utf-8") == good + "\nA line written by hand after the block.\n"


def test_update_docs_names_the_blocks_that_no_page_holds(tmp_path):
    (tmp_path / "page.md").write_text(f"# P\n\n{docs.STRATEGIES_BEGIN}\n{docs.STRATEGIES_END}\n", encoding="utf-8")
    changed, missing = docs.update_docs(tmp_path)
    assert changed == [tmp_path / "page.md"]
    assert missing == ["config reference", "augmentation recipe reference", "command-line reference"]
    assert docs.generated_section((tmp_path / "page.md").read_text(encoding="utf-8"),
                                  docs.STRATEGIES_BEGIN, docs.STRATEGIES_END) == docs.strategy_markdown()


def test_schema_update_docs_rewrites_a_stale_page_and_says_which(tmp_path, monkeypatch):
    pages = copy_docs(tmp_path / "docs")
    page = pages / "active-learning.md"
    page.write_text(page.read_text(encoding="utf-8").replace("| `margin` |", "| `margins` |"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = invoke("schema", "--update-docs")  # no folder given: docs/ of the working folder
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"updated the generated references in {Path('docs') / 'active-learning.md'}"
    assert page.read_text(encoding="utf-8") == (DOCS / "active-learning.md").read_text(encoding="utf-8")
    result = invoke("schema", "--update-docs", pages)
    assert result.exit_code == 0 and result.output.strip() == f"the generated references in {pages} are up to date"


def test_schema_update_docs_of_a_folder_that_is_not_there_is_one_message(tmp_path):
    result = invoke("schema", "--update-docs", tmp_path / "nowhere")
    assert result.exit_code == 2
    assert "nowhere: no such folder; give the folder of the docs pages" in result.output
    assert "Traceback" not in result.output


def test_schema_update_docs_says_which_blocks_have_no_page_and_how_to_add_them(tmp_path):
    (tmp_path / "index.md").write_text("# Nothing generated here\n", encoding="utf-8")
    result = invoke("schema", "--update-docs", tmp_path)
    assert result.exit_code == 2
    assert "no page under" in result.output and "the command-line reference" in result.output
    assert docs.CLI_BEGIN in result.output and "add the markers to the page that should hold it" in result.output
    assert (tmp_path / "index.md").read_text(encoding="utf-8") == "# Nothing generated here\n"


def test_the_command_line_reference_has_every_command_and_option():
    import click

    from patchcfg.cli import main

    text = docs.cli_markdown()

    def walk(command, ctx):
        assert f"\n## {ctx.command_path}\n" in text, ctx.command_path
        for param in command.get_params(ctx):
            if isinstance(param, click.Option) and not param.hidden and "--help" not in param.opts:
                shown = param.get_help_record(ctx)[0]
                assert f"| `{shown}` |" in text.split(f"\n## {ctx.command_path}\n", 1)[1], (
                    f"{ctx.command_path} {shown}")
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                walk(sub, click.Context(sub, info_name=name, parent=ctx))

    walk(main, click.Context(main, info_name="patchcfg"))
    assert "--update-docs [DOCS_DIR]" in text
