"""The CLI front door: validate / show / schema / init / labels / demo, help, exit codes."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from patchcfg.cli import COMMANDS, main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_validate_ok_and_errors(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("name: g\npretrain: {method: simclr}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\npretrain:\n  temprature: 0.2\n")
    result = invoke("validate", good)
    assert result.exit_code == 0 and "ok:" in result.output
    result = invoke("validate", good, bad)
    assert result.exit_code == 2
    assert f"{bad}:3: pretrain.temprature: unknown key (did you mean 'temperature'?)" in result.output
    assert "Traceback" not in result.output


def test_validate_with_override_and_sweep(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: c\n")
    result = invoke("validate", path, "seed=3", "--sweep", "data.channels=1,3")
    assert result.exit_code == 0 and "c_channels-1, c_channels-3" in result.output
    result = invoke("validate", path, "seed=oops")
    assert result.exit_code == 2 and "override 'seed=oops': seed: expected integer" in result.output


def test_show_prints_the_resolved_config(tmp_path):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text("name: c\npretrain: {method: hcl}\n")
    result = invoke("show", path, "pretrain.beta=1.0")
    shown = yaml.safe_load(result.output)
    assert shown["pretrain"]["beta"] == 1.0 and shown["pretrain"]["tau_plus"] == pytest.approx(0.1)


def test_show_needs_exactly_one_config(tmp_path):
    result = invoke("show", "a.yaml", "b.yaml")
    assert result.exit_code == 2 and "expected one config file" in result.output


def test_schema_is_json_with_every_section(tmp_path):
    result = invoke("schema")
    schema = json.loads(result.output)
    assert {"name", "data", "backbone", "augmentation", "pretrain"} <= set(schema["properties"])
    assert "pretrain.schema.json" in schema["$defs"]


def test_init_and_stats_and_add_class(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.png")
    out = tmp_path / "labels.csv"
    result = invoke("init", tmp_path, "--classes", "a,b", "--out", out)
    assert result.exit_code == 0 and "3 images, 2 classes" in result.output
    assert invoke("init", tmp_path, "--out", out).exit_code == 2  # never overwrites a table silently
    assert invoke("labels", "add-class", out, "c").exit_code == 0
    result = invoke("labels", "stats", out)
    assert result.exit_code == 0 and "unknown_train" in result.output and "\nc " in result.output


def test_bad_label_table_is_exit_2(tmp_path):
    table = tmp_path / "labels.csv"
    table.write_text("filepath,a\nx.png,7\n")
    result = invoke("labels", "stats", table)
    assert result.exit_code == 2 and "row 2, column 'a'" in result.output


@pytest.mark.parametrize("verb", [v for v in COMMANDS if __import__("importlib.util").util.find_spec(COMMANDS[v][0])])
def test_every_verb_has_help_with_an_example(verb):
    result = invoke(verb, "--help")
    assert result.exit_code == 0 and "Example" in result.output


def test_top_level_help_lists_verbs():
    result = invoke("--help")
    assert "validate" in result.output and "Example" in result.output


def test_cli_import_does_not_load_tensorflow():
    code = ("import sys, patchcfg, patchcfg.cli, patchcfg.config, patchcfg.labels, patchcfg.experiment\n"
            "from click.testing import CliRunner\n"
            "CliRunner().invoke(patchcfg.cli.main, ['--help'])\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_console_script_exit_code_and_no_traceback(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_bytes(b"\x00\x01binary")
    proc = subprocess.run([sys.executable, "-m", "patchcfg.cli", "validate", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "binary file" in proc.stderr and "Traceback" not in proc.stderr
