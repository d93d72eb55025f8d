"""``patchcfg labels export`` / ``labels import``: a table or a config in, what was written and what was
left out printed; a refusal is one message and exit code 2."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from patchcfg.cli import LazyGroup, main
from patchcfg.commands.labels_cmds import labels
from patchcfg.commands.labels_exchange import labels_export, labels_import

TABLE = "filepath,validation,cat,dog\nimages/a.png,False,1,0\nimages/b.png,True,0,1\nimages/c.png,False,1,\n"


class Labels(LazyGroup):
    """The ``labels`` group with these two commands, with the command line's handling of errors."""

    list_commands = click.Group.list_commands
    get_command = click.Group.get_command


@click.group(cls=Labels)
def labels_group():
    pass


labels_group.add_command(labels_export)
labels_group.add_command(labels_import)


def invoke(*args):
    if "export" in labels.commands:  # attached to `patchcfg labels`
        return CliRunner().invoke(main, ["labels", *map(str, args)])
    return CliRunner().invoke(labels_group, [str(a) for a in args])


@pytest.fixture
def table(tmp_path):
    (tmp_path / "images").mkdir()
    for name in "abc":
        (tmp_path / "images" / f"{name}.png").write_bytes(b"image")
    path = tmp_path / "labels.csv"
    path.write_text(TABLE)
    return path


def assert_one_message(result, *parts):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for part in parts:
        assert part in result.output, result.output


def test_export_folders_prints_what_went_where_and_what_was_left_out(tmp_path, table):
    result = invoke("export", table, "--format", "folders", "--out", tmp_path / "out", "--split")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"wrote {tmp_path / 'out'}: 2 images", "  train/cat: 1", "  val/dog: 1",
                                          "left out 1 rows: 1 unknown cells"]


def test_export_takes_a_config_and_import_reads_the_labels_back(tmp_path, table, finetune_config):
    config = finetune_config(tmp_path, table)
    tasks = tmp_path / "tasks.json"
    result = invoke("export", config, "--format", "label-studio", "--out", tasks)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tasks.label_config.xml").is_file()
    exported = json.loads(tasks.read_text())
    exported[2]["annotations"] = [{"id": 5, "result": [
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["dog"]}}]}]
    (tmp_path / "export.json").write_text(json.dumps(exported))
    result = invoke("import", config, "--from", "label-studio", tmp_path / "export.json")
    assert result.exit_code == 0, result.output
    assert "2 cells changed in 1 rows" in result.output
    assert table.read_text().splitlines()[-1] == "images/c.png,False,False,0,1"


def test_export_fiftyone_copies_with_copy(tmp_path, table):
    result = invoke("export", table, "--format", "fiftyone", "--out", tmp_path / "fo", "--copy")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "fo" / "data" / "images" / "a.png").is_symlink()
    assert json.loads((tmp_path / "fo" / "labels.json").read_text())["labels"]["images/c"] == [0]


def test_an_option_of_another_format_is_refused(tmp_path, table):
    result = invoke("export", table, "--format", "folders", "--out", tmp_path / "out", "--predictions", table)
    assert_one_message(result, "--predictions applies to --format label-studio, not folders")
    assert not (tmp_path / "out").exists()


def test_an_import_of_an_unknown_class_is_one_message(tmp_path, table):
    task = {"id": 3, "data": {"image": "images/a.png"}, "annotations": [{"result": [
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["bird"]}}]}]}
    (tmp_path / "export.json").write_text(json.dumps([task]))
    result = invoke("import", table, "--from", "label-studio", tmp_path / "export.json")
    assert_one_message(result, "task 3: class 'bird' is not a class of", "labels add-class")
    assert table.read_text() == TABLE
