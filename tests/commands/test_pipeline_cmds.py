"""``patchcfg query`` / ``finetune`` / ``run`` options: never a write over the user's own files, and
option values (paths, names) taken exactly as typed. All of these stop before TensorFlow loads."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from patchcfg.cli import main

TABLE = "filepath,validation,zero,one\na.png,False,1,0\nb.png,False,,\nc.png,True,0,1\n"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def setup(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text(TABLE)
    config = tmp_path / "c.yaml"
    config.write_text(f"name: q\ndata: {{labels: {labels}}}\nfinetune: {{}}\n"
                      "query: {strategy: entropy, n: 2}\n")
    return labels, config


def test_query_never_writes_over_its_own_label_table(setup, tmp_path):
    labels, config = setup
    for extra in ([], ["--force"]):
        result = invoke("query", config, "--out", labels, *extra, "--experiments", tmp_path / "exp")
        assert result.exit_code == 2 and "is the label table this command reads" in result.output
        assert labels.read_text() == TABLE
    link = tmp_path / "alias.csv"
    link.symlink_to(labels)
    result = invoke("query", config, "--out", link, "--experiments", tmp_path / "exp")
    assert result.exit_code == 2 and "is the label table" in result.output


def test_query_never_writes_over_its_config(setup, tmp_path):
    _, config = setup
    text = config.read_text()
    result = invoke("query", config, "--out", config, "--force", "--experiments", tmp_path / "exp")
    assert result.exit_code == 2 and "is the config this command reads" in result.output
    assert config.read_text() == text


def test_query_out_over_a_file_that_is_not_a_queue_needs_force(setup, tmp_path):
    _, config = setup
    mine = tmp_path / "notes.csv"
    mine.write_text("my,own\n1,2\n")
    result = invoke("query", config, "--out", mine, "--experiments", tmp_path / "exp")
    assert result.exit_code == 2 and "already exists and was not written by this command" in result.output
    assert "--force" in result.output and mine.read_text() == "my,own\n1,2\n"


def test_query_options_are_taken_as_typed(setup, tmp_path):
    """``--out 'queue #1.csv'`` is that file, not ``queue`` (YAML would cut a comment off)."""
    _, config = setup
    out = tmp_path / "queue #1.csv"
    out.write_text("not a queue\n")
    result = invoke("query", config, "--out", out, "--experiments", tmp_path / "exp")
    assert result.exit_code == 2 and f"{out} already exists" in result.output
    assert not (tmp_path / "queue").exists()
    result = invoke("query", config, "--subset", "unlabeled #x", "--experiments", tmp_path / "exp")
    assert result.exit_code == 2 and "unlabeled #x" in result.output


def test_labels_option_is_taken_as_typed(setup, tmp_path):
    _, config = setup
    odd = tmp_path / "my #1.csv"
    odd.write_text("filepath,zero\na.png,yes\n")
    for verb in ("query", "finetune", "run"):
        result = invoke(verb, config, "--labels", odd, "--experiments", tmp_path / "exp")
        assert result.exit_code == 2, (verb, result.output)
        assert f"{odd}: row 2, column 'zero': 'yes' is not a label" in result.output, (verb, result.output)


def test_unknown_class_lists_the_valid_classes(setup, tmp_path):
    _, config = setup
    result = invoke("query", config, "--strategy", "maxent:zer", "--experiments", tmp_path / "exp")
    assert result.exit_code == 2 and "valid classes: zero, one" in result.output
    assert "classs" not in result.output


def test_predict_never_replaces_a_label_table_without_force(setup, tmp_path):
    labels, _ = setup
    result = invoke("predict", tmp_path / "no-model", tmp_path, "--out", labels)
    assert result.exit_code == 2 and "already exists and was not written by this command" in result.output
    assert labels.read_text() == TABLE
    earlier = tmp_path / "preds.csv"
    earlier.write_text("filepath,zero,one\na.png,0.25,0.75\n")
    result = invoke("predict", tmp_path / "no-model", tmp_path, "--out", earlier)
    assert "already exists" not in result.output  # an earlier predictions file may be replaced
