"""The CLI front door: validate / show / schema / init / labels / demo, help, exit codes."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from patchcfg.cli import main


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


@pytest.mark.parametrize("verb", main.list_commands(None))
def test_every_verb_has_help_with_an_example(verb):
    result = invoke(verb, "--help")
    assert result.exit_code == 0 and "Example" in result.output


def test_top_level_help_lists_verbs():
    result = invoke("--help")
    assert "validate" in result.output and "Example" in result.output


def test_cli_import_does_not_load_tensorflow():
    code = ("import sys, patchcfg, patchcfg.cli, patchcfg.config, patchcfg.label_table, patchcfg.experiment\n"
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


# --------------------------------------------------------------------------- validate finds what a run finds

def finetune_yaml(tmp_path, labels, loss="masked_bce", name="v"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\ndata: {{labels: {labels}}}\nfinetune:\n  loss: {loss}\n")
    return path


@pytest.mark.parametrize("text, message", [
    (None, "label table not found"),
    ("filepath,cat\na.png,1\nb.png,yes\n", "row 3, column 'cat': 'yes' is not a label"),
    ("filepath,cat\n", "no rows"),
])
def test_validate_reads_the_label_table_as_the_stages_do(tmp_path, text, message):
    labels = tmp_path / "labels.csv"
    if text is not None:
        labels.write_text(text)
    result = invoke("validate", finetune_yaml(tmp_path, labels))
    assert result.exit_code == 2 and message in result.output and "ok:" not in result.output
    assert str(labels) in result.output


def test_validate_checks_the_labels_option_and_a_folder_is_named_a_folder(tmp_path):
    good = tmp_path / "labels.csv"
    good.write_text("filepath,cat\na.png,1\n")
    config = finetune_yaml(tmp_path, good)
    assert invoke("validate", config).exit_code == 0
    result = invoke("validate", config, "--labels", tmp_path / "missing.csv")
    assert result.exit_code == 2 and "missing.csv: label table not found" in result.output
    result = invoke("validate", config, f"data.labels={tmp_path}")
    assert result.exit_code == 2 and "is a folder" in result.output and "not found" not in result.output


def test_finetune_on_a_header_only_table_says_no_rows(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("filepath,validation,cat\n")
    result = invoke("finetune", finetune_yaml(tmp_path, labels), "--experiments", tmp_path / "exp")
    assert result.exit_code == 2 and "has no rows" in result.output
    assert "validation rows" not in result.output


@pytest.mark.parametrize("loss, message", [
    ("masked_bce+0.1*dise", "loss 'dise': unknown (did you mean 'dice'?)"),
    ("masked_bce; import os", "cannot read"),
    ("__import__('os').system('true')", "cannot read"),
    ("os:system", "not a loss; a loss is a Python function fn(y_true, y_pred, **params)"),
    ("focal(gama=2)", "takes no parameter gama"),
])
def test_validate_checks_every_loss_expression(tmp_path, loss, message):
    labels = tmp_path / "labels.csv"
    labels.write_text("filepath,cat\na.png,1\n")
    config = finetune_yaml(tmp_path, labels, loss=f'"{loss}"')
    result = invoke("validate", config)
    assert result.exit_code == 2 and message in result.output, result.output
    assert f"{config}:4: finetune.loss:" in result.output


def test_a_stage_loss_is_checked_at_its_line(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("filepath,cat\na.png,1\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"name: c\ndata: {{labels: {labels}}}\nfinetune:\n  stages:\n    - {{epochs: 1}}\n"
                      "    - {epochs: 1, loss: json:loads}\n")
    result = invoke("validate", config)
    assert result.exit_code == 2 and f"{config}:6: finetune.stages.1.loss: loss 'json:loads'" in result.output


def test_validate_with_table_and_losses_does_not_load_tensorflow(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("filepath,cat\na.png,1\n")
    config = finetune_yaml(tmp_path, labels, loss="masked_bce+0.1*dice")
    code = ("import sys\nfrom click.testing import CliRunner\nimport patchcfg.cli\n"
            f"r = CliRunner().invoke(patchcfg.cli.main, ['validate', {str(config)!r}])\n"
            "assert r.exit_code == 0, r.output\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_device_or_a_fifo_as_config_is_refused_without_reading_it(tmp_path, run_cli):
    import os

    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    for path in ("/dev/zero", fifo):
        result = run_cli("validate", path, timeout=30)
        assert result.returncode == 2 and "not a regular file" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_a_config_larger_than_its_size_says_is_read_with_a_cap(tmp_path, monkeypatch):
    """stat may say 0 bytes (procfs, a file growing): the read itself is capped."""
    from patchcfg.config import yaml_loader

    path = tmp_path / "big.yaml"
    path.write_text("name: big\n" + "# filler\n" * 50)
    monkeypatch.setattr(yaml_loader, "MAX_CONFIG_BYTES", 100)
    real_stat = type(path).stat

    def zero_size(self, *args, **kwargs):
        info = real_stat(self, *args, **kwargs)
        return os_stat_result_with_size(info, 0) if self == path else info

    monkeypatch.setattr(type(path), "stat", zero_size)
    result = invoke("validate", path)
    assert result.exit_code == 2 and "too large for a config" in result.output


def os_stat_result_with_size(info, size):
    import os

    fields = list(info)
    fields[6] = size
    return os.stat_result(fields)


@pytest.mark.parametrize("name", ["..", "."])
def test_a_name_of_dots_is_refused(tmp_path, name):
    config = tmp_path / "c.yaml"
    config.write_text("name: ok\n")
    result = invoke("validate", config, f"name={name}")
    assert result.exit_code == 2 and "name: must use only letters" in result.output
    assert "not only dots" in result.output
